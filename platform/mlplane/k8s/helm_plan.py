"""Which Helm releases `mlplane cluster install|upgrade|uninstall` touches, in which order, with which values.

Pure: no Helm, no cluster. `mlplane.cli.cluster` executes a plan with the embedded Helm engine.

The CRDs chart goes first (the operator watches ModelDeployments, and Helm maps every object to an
API before it installs anything), then the mlplane chart with the user's values; uninstalling goes
the other way. The CRDs themselves stay on uninstall (`helm.sh/resource-policy: keep`), and with
them every ModelDeployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlplane._generated import REPO_ROOT
from mlplane.k8s.chart_values import ChartValues, defaults

DEFAULT_CHARTS_DIR = REPO_ROOT / "charts"
DEFAULT_NAMESPACE = "mlplane"
CRDS_RELEASE = "mlplane-crds"
MLPLANE_RELEASE = "mlplane"


class ValuesFileError(ValueError):
    """A --values file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ReleaseStep:
    """One Helm release: install/upgrade `chart` as `release` in `namespace` with `values`."""

    release: str
    chart: Path
    namespace: str
    values: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = False  # wait until its Deployments (the operator's) are ready


def load_values(path: Path) -> dict[str, Any]:
    """A values file for the mlplane chart, checked against the chart's values models."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValuesFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ValuesFileError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ValuesFileError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValuesFileError(f"{path}: must be a mapping of chart values, got {type(values).__name__}")
    try:
        ChartValues.model_validate(coalesce(defaults(), values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValuesFileError(f"{path}: {problems}") from None
    return values


def coalesce(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` laid over `base` the way Helm merges a values file into the chart's defaults.

    Mappings merge key by key, anything else replaces, and `null` removes the default.
    """
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = value
    return merged


def install_plan(values: Mapping[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
                 charts_dir: Path = DEFAULT_CHARTS_DIR) -> list[ReleaseStep]:
    """Install or upgrade: the CRDs, then mlplane (waiting for its operator)."""
    return [ReleaseStep(CRDS_RELEASE, charts_dir / "mlplane-crds", namespace),
            ReleaseStep(MLPLANE_RELEASE, charts_dir / "mlplane", namespace, dict(values), wait=True)]


def uninstall_plan(*, namespace: str = DEFAULT_NAMESPACE, charts_dir: Path = DEFAULT_CHARTS_DIR) -> list[ReleaseStep]:
    """Uninstall: mlplane first (the operator stops), then the CRDs release (the CRDs stay)."""
    return list(reversed(install_plan({}, namespace=namespace, charts_dir=charts_dir)))


def manifest_objects(manifest: str) -> list[dict[str, Any]]:
    """The objects of a rendered release manifest."""
    return [doc for doc in yaml.safe_load_all(manifest) if isinstance(doc, dict)]


def operator_deployment(objects: Iterable[Mapping[str, Any]]) -> str | None:
    """The name of the operator's Deployment among a release's objects, if there is one."""
    for obj in objects:
        labels = obj.get("metadata", {}).get("labels", {})
        if obj.get("kind") == "Deployment" and labels.get("app.kubernetes.io/component") == "operator":
            return str(obj["metadata"]["name"])
    return None
