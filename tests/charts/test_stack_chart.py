"""charts/mlplane-stack, the umbrella chart, checked offline.

`helm dependency build` needs the network, so the third-party charts are never downloaded here: the
tests check their declarations, and render and lint a copy of the stack with only the local
(`file://`) dependencies vendored, every third-party one switched off.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_helpers import CHARTS, K8S_VERSION, find, objects

from mlplane.k8s import versions

STACK = CHARTS / "mlplane-stack"
THIRD_PARTY = ["cert-manager", "kserve-crd", "kube-prometheus-stack", "gpu-operator", "kuberay-operator", "keda",
               "kserve-resources", "milvus"]
LOCAL = ["mlplane-crds", "mlplane"]
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
ALL_OFF = {name: {"enabled": False} for name in THIRD_PARTY}
MLPLANE_ON = {**ALL_OFF, "mlplane-crds": {"enabled": True}, "mlplane": {"enabled": True}}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dependencies() -> list[dict[str, str]]:
    return _yaml(STACK / "Chart.yaml")["dependencies"]


@pytest.fixture(scope="module")
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the stack with the local dependencies in charts/, as `helm dependency build` puts them."""
    root = tmp_path_factory.mktemp("stack") / "mlplane-stack"
    shutil.copytree(STACK, root)
    for name in LOCAL:
        shutil.copytree(CHARTS / name, root / "charts" / name)
    return root


def render_stack(chart_dir: Path, values: dict[str, Any]) -> dict[str, str]:
    with helm_python.Chart.load(str(chart_dir)) as chart:
        return chart.render(values, name="mlplane", namespace="monitoring", is_install=True)


# --------------------------------------------------------------------------- declarations
def test_every_dependency_is_pinned_sourced_and_switchable() -> None:
    chart = _yaml(STACK / "Chart.yaml")
    assert (chart["apiVersion"], chart["name"], chart["type"]) == ("v2", "mlplane-stack", "application")
    assert EXACT_VERSION.match(chart["version"])
    deps = dependencies()
    assert [d["name"] for d in deps] == THIRD_PARTY + LOCAL
    values = _yaml(STACK / "values.yaml")
    for dep in deps:
        assert set(dep) == {"name", "version", "repository", "condition"}, dep
        assert EXACT_VERSION.match(dep["version"]), f"{dep['name']}: {dep['version']} is not an exact version"
        assert re.match(r"^(https://|oci://|file://\.\./)", dep["repository"]), dep
        assert dep["condition"] == f"{dep['name']}.enabled"
        assert isinstance(values[dep["name"]]["enabled"], bool), f"values.yaml lacks {dep['name']}.enabled"
    # Third-party operators on, mlplane itself off (installed after KServe's CRDs exist).
    assert {d["name"] for d in deps if values[d["name"]]["enabled"]} == set(THIRD_PARTY) - {"milvus"}
    # The same charts, versions and repositories as `mlplane cluster install` (mlplane.k8s.versions).
    assert [(d["name"], d["version"], d["repository"]) for d in deps[:len(THIRD_PARTY)]] == [
        (d.name, d.version, d.repository) for d in versions.STACK]


def test_the_engine_reads_the_declarations() -> None:
    listed = helm_python.dependency_list(str(STACK))
    assert [(d["name"], d["version"], d["repository"]) for d in listed] == [
        (d["name"], d["version"], d["repository"]) for d in dependencies()]


def test_local_dependencies_match_the_charts_they_point_to() -> None:
    for dep in (d for d in dependencies() if d["repository"].startswith("file://")):
        target = (STACK / dep["repository"].removeprefix("file://")).resolve()
        meta = _yaml(target / "Chart.yaml")
        assert (meta["name"], meta["version"]) == (dep["name"], dep["version"]), target


def test_no_third_party_template_is_copied_in() -> None:
    assert sorted(p.name for p in (STACK / "templates").iterdir()) == ["NOTES.txt"]
    assert not (STACK / "charts").exists(), "downloaded dependencies must not be committed"


def test_gpu_metrics_reach_prometheus() -> None:
    """DCGM exporter on with a ServiceMonitor that keeps the workload's pod labels, and Prometheus picks
    up every ServiceMonitor (tests/stack/test_stack_prometheus.py runs the queries)."""
    values = _yaml(STACK / "values.yaml")
    assert values["gpu-operator"]["dcgmExporter"] == {
        "enabled": True, "serviceMonitor": {"enabled": True, "honorLabels": True}}
    spec = values["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False


# --------------------------------------------------------------------------- offline render and lint
def test_stack_renders_mlplane_with_third_party_off(vendored: Path) -> None:
    manifests = render_stack(vendored, MLPLANE_ON)
    objs = objects(manifests)
    crds = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    assert sorted(o["metadata"]["name"] for o in crds) == ["modeldeployments.mlplane.io", "platforms.mlplane.io"]
    assert find(objs, "Deployment", "mlplane-operator")["metadata"]["namespace"] == "monitoring"
    for obj in objs:
        # Custom objects are validated against their CRDs in tests/stack/test_stack_objects.py.
        if not obj["apiVersion"].startswith(("serving.kserve.io/", "apiextensions.k8s.io/", "mlplane.io/")):
            assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION, obj["metadata"]["name"]
    notes = manifests["mlplane-stack/templates/NOTES.txt"]
    assert "- mlplane\n" in notes and "- keda" not in notes and "WARNING" not in notes


def test_default_stack_leaves_mlplane_for_later_and_says_so(vendored: Path) -> None:
    manifests = render_stack(vendored, {})
    assert objects(manifests) == []
    notes = manifests["mlplane-stack/templates/NOTES.txt"]
    assert "- kserve-crd" in notes and "- cert-manager" in notes and "- milvus" not in notes
    assert "in phases" in notes and "mlplane cluster install" in notes


def test_prometheus_outside_monitoring_is_warned_about(vendored: Path) -> None:
    with helm_python.Chart.load(str(vendored)) as chart:
        manifests = chart.render({}, name="stack", namespace="platform", is_install=True)
    notes = manifests["mlplane-stack/templates/NOTES.txt"]
    assert "prometheus-operated.monitoring.svc" in notes


def test_mlplane_values_are_checked_through_the_umbrella(vendored: Path) -> None:
    objs = objects(render_stack(vendored, {**MLPLANE_ON, "mlplane": {"enabled": True, "mlflow": {"port": 5001}}}))
    assert find(objs, "Service", "mlplane-mlflow")["spec"]["ports"][0]["port"] == 5001
    with pytest.raises(helm_python.HelmError, match="additional properties 'mlfow' not allowed"):
        render_stack(vendored, {**MLPLANE_ON, "mlplane": {"enabled": True, "mlfow": {}}})


def test_strict_lint_finds_nothing_but_the_undownloaded_charts(vendored: Path) -> None:
    report = helm_python.lint(str(vendored), MLPLANE_ON, strict=True, namespace="monitoring",
                              kube_version=f"v{K8S_VERSION}.0")
    assert report["errors"] == [f"chart directory is missing these dependencies: {','.join(THIRD_PARTY)}"]
