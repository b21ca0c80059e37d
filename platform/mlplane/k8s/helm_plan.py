"""Which Helm releases `mlplane cluster install|upgrade|uninstall` touches, in which order, with which values.

Pure: no Helm, no cluster (`stack_values` reads one file). `mlplane.cli.cluster` executes a plan with
the embedded Helm engine.

On an empty cluster the order matters, because Helm maps every object of a release to an API before
it installs anything. The plan runs in phases (`mlplane.k8s.versions.PHASES`), each release waiting
until its objects are ready (CRDs established, Deployments available) before the next:

1. cert-manager, with its CRDs;
2. CRD-only charts: KServe's CRDs (kept in its templates) and mlplane's;
3. controllers: kube-prometheus-stack, the GPU operator, KubeRay (their CRDs come from their charts'
   `crds/` folders, which Helm installs first), KEDA (CRDs in its templates, nothing that needs them),
   then KServe's controller, whose Issuer/Certificate and ClusterStorageContainer need phases 1 and 2;
4. mlplane: the operator, MLflow and the ClusterServingRuntimes (validated by KServe's webhooks).

Third-party charts are referenced by repository and exact version (`mlplane.k8s.versions.STACK`) and
downloaded by Helm at install time; their values are those of `charts/mlplane-stack/values.yaml`.
Uninstalling goes the other way and leaves the CRD-only releases (and so every custom resource) in
place unless asked to delete them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import mlplane
from mlplane._generated import REPO_ROOT
from mlplane.k8s import versions
from mlplane.k8s.chart_values import ChartValues, defaults

# Installed wheels carry the charts as package data (mlplane/_charts); a source tree has charts/.
PACKAGED_CHARTS_DIR = Path(mlplane.__file__).resolve().parent / "_charts"
SOURCE_CHARTS_DIR = REPO_ROOT / "charts"
DEFAULT_NAMESPACE = "mlplane"
CRDS_RELEASE = "mlplane-crds"
MLPLANE_RELEASE = "mlplane"
STACK_CHART = "mlplane-stack"
# Releases that hold CRDs as ordinary objects: uninstalling them deletes the CRDs and every object of
# those kinds, so `uninstall` keeps them unless asked (`--delete-crds`).
CRD_RELEASES = frozenset({CRDS_RELEASE, "kserve-crd"})
MLPLANE_CRDS = ("modeldeployments.mlplane.io", "platforms.mlplane.io")
# CRDs Helm never deletes: `crds/` folders, and templates marked `helm.sh/resource-policy: keep`.
ALWAYS_KEPT_CRDS = ("cert-manager's (crds.keep)", "KEDA's (helm.sh/resource-policy: keep)",
                    "those of kube-prometheus-stack, gpu-operator and kuberay-operator (crds/ folders)")
OPTIONAL = frozenset(d.name for d in versions.STACK if d.optional)
COMPONENTS = (*(d.name for d in versions.STACK), CRDS_RELEASE, MLPLANE_RELEASE)


def default_charts_dir() -> Path:
    """The charts shipped in the wheel, else the source tree's charts/ folder."""
    return PACKAGED_CHARTS_DIR if (PACKAGED_CHARTS_DIR / "mlplane").is_dir() else SOURCE_CHARTS_DIR


DEFAULT_CHARTS_DIR = default_charts_dir()


class ValuesFileError(ValueError):
    """A --values file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ReleaseStep:
    """One Helm release: install/upgrade `chart` as `release` in `namespace` with `values`.

    `chart` is a local chart directory (mlplane's own), or a chart reference Helm downloads: a chart
    name in the Helm repository `repo_url`, or an `oci://` URL; `version` pins it.
    """

    release: str
    chart: Path | str
    namespace: str
    values: Mapping[str, Any] = field(default_factory=dict)
    wait: bool = True  # wait until its objects are ready (CRDs established, Deployments available)
    phase: str = versions.PHASE_MLPLANE
    version: str | None = None
    repo_url: str | None = None

    @property
    def local(self) -> bool:
        return isinstance(self.chart, Path)

    @property
    def source(self) -> str:
        """Where the chart comes from, for people: `<ref> <version> from <repository>` or the directory."""
        if isinstance(self.chart, Path):
            return str(self.chart)
        where = f" from {self.repo_url}" if self.repo_url else ""
        return f"{self.chart} {self.version}{where}"


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


class UnknownComponentError(ValueError):
    """`--skip`/`--include` named something that is not part of the stack."""


def stack_values(charts_dir: Path) -> dict[str, dict[str, Any]]:
    """Each dependency's values from charts/mlplane-stack/values.yaml, without the umbrella's `enabled`."""
    path = charts_dir / STACK_CHART / "values.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValuesFileError(f"{path}: cannot be read ({exc.strerror}); set --charts-dir to mlplane's "
                              "charts/ folder") from None
    return {name: {k: v for k, v in (body or {}).items() if k != "enabled"} for name, body in raw.items()}


def _check_names(names: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise UnknownComponentError(f"{what}: unknown component(s) {', '.join(unknown)}; "
                                    f"choose from {', '.join(COMPONENTS)}")


def install_plan(values: Mapping[str, Any], *, namespace: str = DEFAULT_NAMESPACE,
                 charts_dir: Path | None = None, third_party: Mapping[str, Mapping[str, Any]] | None = None,
                 skip: Collection[str] = (), include: Collection[str] = ()) -> list[ReleaseStep]:
    """Install or upgrade, phase by phase: every release waits for its objects before the next.

    `values` are the mlplane chart's; `third_party` each dependency's (default: `stack_values`).
    `skip` leaves components out (e.g. a GPU operator the cluster already runs); optional ones
    (Milvus) are in only when named in `include`.
    """
    _check_names(skip, "--skip")
    _check_names(include, "--include")
    charts_dir = charts_dir or DEFAULT_CHARTS_DIR
    if third_party is None:
        third_party = stack_values(charts_dir)
    steps = [ReleaseStep(d.name, d.chart_ref, d.namespace, dict(third_party.get(d.name, {})), phase=d.phase,
                         version=d.version, repo_url=d.repo_url)
             for d in versions.STACK if not d.optional or d.name in include]
    steps.append(ReleaseStep(CRDS_RELEASE, charts_dir / CRDS_RELEASE, namespace, phase=versions.PHASE_CRDS))
    steps.append(ReleaseStep(MLPLANE_RELEASE, charts_dir / MLPLANE_RELEASE, namespace, dict(values)))
    order = {phase: i for i, phase in enumerate(versions.PHASES)}
    steps.sort(key=lambda s: order[s.phase])  # stable: within a phase, the order of versions.STACK
    return [s for s in steps if s.release not in skip]


def phases(plan: Iterable[ReleaseStep]) -> list[tuple[str, list[ReleaseStep]]]:
    """The plan's steps grouped by phase, in order."""
    grouped: dict[str, list[ReleaseStep]] = {}
    for step in plan:
        grouped.setdefault(step.phase, []).append(step)
    return list(grouped.items())


def uninstall_plan(*, namespace: str = DEFAULT_NAMESPACE, charts_dir: Path | None = None,
                   skip: Collection[str] = (), include: Collection[str] = (),
                   delete_crds: bool = False) -> list[ReleaseStep]:
    """Uninstall in reverse; the CRD-only releases stay unless `delete_crds`."""
    plan = install_plan({}, namespace=namespace, charts_dir=charts_dir, third_party={}, skip=skip,
                        include=include)
    return [s for s in reversed(plan) if delete_crds or s.release not in CRD_RELEASES]


def kept_crds(delete_crds: bool) -> str:
    """Which CRDs an uninstall leaves in place, for people."""
    kept = [] if delete_crds else [f"mlplane's ({', '.join(MLPLANE_CRDS)})", "KServe's (release kserve-crd)"]
    return ", ".join([*kept, *ALWAYS_KEPT_CRDS])


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
