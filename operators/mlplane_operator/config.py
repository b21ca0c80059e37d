"""The operator's settings, read from the environment the chart's ConfigMap and Deployment set.

| variable | meaning | default |
|---|---|---|
| `MLFLOW_TRACKING_URI` | MLflow tracking server + registry that resolves `models:/` references | unset |
| `MLPLANE_RESYNC_SECONDS` | how often every deployment is reconciled again (aliases, drift) | 60 |
| `MLPLANE_RETRY_SECONDS` | delay before retrying when MLflow or the API server failed | 30 |
| `MLPLANE_PROMETHEUS_URL` | where KEDA's triggers query metrics | render's default |
| `MLPLANE_GPU_HEADROOM` | GPUs free for a surge pod in rolling updates | 0 |
| `MLPLANE_GPU_NODE_SELECTOR` | JSON object: node labels of GPU pods | the Platform default |
| `MLPLANE_GPU_TOLERATIONS` | JSON list of tolerations for GPU pods | the Platform default |
| `MLPLANE_GPU_RESOURCE_NAME` | extended resource name of GPUs | `nvidia.com/gpu` |

The namespaces watched are kopf's command-line choice (`--all-namespaces` or `--namespace`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlplane.k8s.render import DEFAULT_PROMETHEUS_URL
from mlplane.spec import Platform, SpecError, load_dict


class ConfigError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator reads from its environment, validated once at start."""

    tracking_uri: str | None = None
    resync_seconds: float = 60.0
    retry_seconds: float = 30.0
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    gpu_headroom: int = 0
    platform: Platform = field(default_factory=Platform.default)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        pool: dict[str, Any] = {}
        for var, key in (("MLPLANE_GPU_NODE_SELECTOR", "nodeSelector"), ("MLPLANE_GPU_TOLERATIONS", "tolerations")):
            if env.get(var):
                try:
                    pool[key] = json.loads(env[var])
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{var}: not JSON ({exc.msg})") from None
        if env.get("MLPLANE_GPU_RESOURCE_NAME"):
            pool["gpuResourceName"] = env["MLPLANE_GPU_RESOURCE_NAME"]
        try:
            platform = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                  "metadata": {"name": "cluster"}, "spec": {"gpuNodePool": pool}},
                                 source="MLPLANE_GPU_* environment", document=None)
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
        assert isinstance(platform, Platform)
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            resync_seconds=_number(env, "MLPLANE_RESYNC_SECONDS", 60.0, minimum=0.1),
            retry_seconds=_number(env, "MLPLANE_RETRY_SECONDS", 30.0, minimum=0.1),
            prometheus_url=env.get("MLPLANE_PROMETHEUS_URL") or DEFAULT_PROMETHEUS_URL,
            gpu_headroom=int(_number(env, "MLPLANE_GPU_HEADROOM", 0, minimum=0, whole=True)),
            platform=platform,
        )


def _number(env: Mapping[str, str], var: str, default: float, *, minimum: float, whole: bool = False) -> float:
    text = env.get(var)
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ConfigError(f"{var}: got {text!r}; expected a {'whole ' if whole else ''}number") from None
    if value < minimum:
        raise ConfigError(f"{var}: got {text!r}; must be at least {minimum:g}")
    return value
