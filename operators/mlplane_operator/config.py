"""The operator's own settings, read from the environment the chart's ConfigMap and Deployment set.

Everything about the platform (tracking, feature store, vector store, GPU pool, serving defaults) is
a `Platform` object in the cluster (the chart installs one from its `platform:` value), not a setting.

| variable | meaning | default |
|---|---|---|
| `MLFLOW_TRACKING_URI` | the chart's MLflow: the tracking server of Platforms with `tracking.mode: embedded` | unset |
| `MLPLANE_RESYNC_SECONDS` | how often every deployment and Platform is reconciled again (aliases, drift) | 60 |
| `MLPLANE_RETRY_SECONDS` | delay before retrying when MLflow or the API server failed | 30 |
| `MLPLANE_PROMETHEUS_URL` | where KEDA's triggers query metrics | render's default |
| `MLPLANE_PROBE_TIMEOUT_SECONDS` | how long a Platform's dependency check (MLflow, Milvus) may take | 5 |
| `MLPLANE_REGISTRY_TIMEOUT_SECONDS` | how long one MLflow call may take before the operator retries later | 10 |
| `POD_NAMESPACE` | the operator's namespace: where the chart's default Platform lives | `mlplane` |

`python -m mlplane_operator` reads them once at start ([`__main__`](__main__.py)) and watches every
namespace; importing the package reads nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlplane.k8s.render import DEFAULT_PROMETHEUS_URL
from mlplane.registry import DEFAULT_TIMEOUT_S

DEFAULT_OPERATOR_NAMESPACE = "mlplane"


class ConfigError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator reads from its environment, validated once at start."""

    tracking_uri: str | None = None
    resync_seconds: float = 60.0
    retry_seconds: float = 30.0
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    probe_timeout_seconds: float = 5.0
    registry_timeout_seconds: float = DEFAULT_TIMEOUT_S
    namespace: str = DEFAULT_OPERATOR_NAMESPACE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            resync_seconds=_number(env, "MLPLANE_RESYNC_SECONDS", 60.0, minimum=0.1),
            retry_seconds=_number(env, "MLPLANE_RETRY_SECONDS", 30.0, minimum=0.1),
            prometheus_url=env.get("MLPLANE_PROMETHEUS_URL") or DEFAULT_PROMETHEUS_URL,
            probe_timeout_seconds=_number(env, "MLPLANE_PROBE_TIMEOUT_SECONDS", 5.0, minimum=0.1),
            registry_timeout_seconds=_number(env, "MLPLANE_REGISTRY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_S, minimum=0.1),
            namespace=env.get("POD_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE,
        )


def _number(env: Mapping[str, str], var: str, default: float, *, minimum: float) -> float:
    text = env.get(var)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{var}: got {text!r}; expected a number") from None
    if value < minimum:
        raise ConfigError(f"{var}: got {text!r}; must be at least {minimum:g}")
    return value
