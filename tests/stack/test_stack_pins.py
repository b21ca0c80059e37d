"""The stack's pins are versions that exist, that we test against, and that every part of mlplane agrees on.

Against the upstream charts' data in ../shared/upstream-charts (Chart.yaml, values.yaml and CRDs of
each chart at the pinned version): a pin that doesn't exist, a values key upstream doesn't have (a
silent no-op in Helm), or a second version of one dependency somewhere fails here.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from stack_helpers import PLACEHOLDER_TAGS, STACK, load_yaml, rendered_kinds, stack_values, upstream, upstream_values

from mlplane._generated import REPO_ROOT
from mlplane.k8s import versions

render_module = importlib.import_module("mlplane.k8s.render")
LOCAL = {"mlplane-crds", "mlplane"}


def stack_dependencies() -> list[dict[str, str]]:
    return load_yaml(STACK / "Chart.yaml")["dependencies"]


def upstream_version(name: str) -> str:
    """The release the data's snapshot is (placeholder versions on default branches mapped to their tag)."""
    version = str(load_yaml(upstream(name, "Chart.yaml"))["version"])
    assert str(rendered_kinds()[name]["version"]) == version
    return PLACEHOLDER_TAGS.get((name, version), version)


def test_one_version_per_dependency_in_chart_yaml_and_versions_py() -> None:
    third_party = [d for d in stack_dependencies() if d["name"] not in LOCAL]
    assert sorted((d["name"], d["version"], d["repository"]) for d in third_party) == sorted(
        (d.name, d.version, d.repository) for d in versions.STACK)
    assert len({d.name for d in versions.STACK}) == len(versions.STACK)


@pytest.mark.parametrize("dep", versions.STACK, ids=lambda d: d.name)
def test_each_pin_is_the_version_whose_data_we_test_against(dep: versions.Dependency) -> None:
    assert dep.version == upstream_version(dep.name), (
        f"{dep.name} is pinned to {dep.version}, ../shared/upstream-charts/{dep.name} is {upstream_version(dep.name)}")
    meta = load_yaml(upstream(dep.name, "Chart.yaml"))
    assert meta["name"] == dep.name  # the chart name Helm looks up in the repository


def test_the_kserve_controller_chart_has_its_current_name_and_cert_manager_is_in_the_stack() -> None:
    names = [d.name for d in versions.STACK]
    assert "kserve" not in names and {"kserve-crd", "kserve-resources", "cert-manager"} <= set(names)
    assert versions.STACK_BY_NAME["kserve-crd"].version == versions.STACK_BY_NAME["kserve-resources"].version


def test_render_defaults_and_docs_read_the_same_versions() -> None:
    assert render_module.RAY_VERSION == versions.RAY_VERSION
    import ray
    assert ray.__version__ == versions.RAY_VERSION, "the RayService pods must run the Ray mlplane is tested with"
    guide = (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    readme = (STACK / "README.md").read_text(encoding="utf-8")
    for dep in versions.STACK:
        assert f"{dep.name} --version {dep.version}" in guide.replace("\\\n", " ").replace("  ", " "), dep.name
        assert f"| `{dep.name}` | {dep.version} |" in readme, dep.name
    assert not re.search(r"v0\.16\.1|2\.21\.1", guide + readme)


def test_the_kserve_python_package_and_controller_are_the_documented_pair() -> None:
    from importlib.metadata import version

    assert version("kserve").startswith(versions.KSERVE_PYTHON_MINOR + ".")
    controller_minor = re.match(r"v(\d+\.\d+)\.", versions.KSERVE_VERSION).group(1)  # type: ignore[union-attr]
    assert (controller_minor, versions.KSERVE_PYTHON_MINOR) == ("0.20", "0.21"), (
        "a new KServe pair: re-check tests/stack/test_stack_objects.py and docs/kubernetes.md")
    assert "0.21" in (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- values keys exist upstream
def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [p for k, v in values.items() for p in leaf_paths(v, (*prefix, str(k)))]
    return [prefix]


def exists(tree: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


# Keys whose upstream default is an empty map meant to be filled (the key is the map, its entries are free).
FREE_MAPS = {("keda", ("crds", "additionalAnnotations"))}


@pytest.mark.parametrize("name", [d.name for d in versions.STACK])
def test_every_value_the_stack_sets_exists_upstream(name: str) -> None:
    ours = {k: v for k, v in stack_values()[name].items() if k != "enabled"}  # `enabled`: the umbrella's condition
    theirs = upstream_values(name)
    for path in leaf_paths(ours):
        if not path:
            continue
        free = next((m for n, m in FREE_MAPS if n == name and path[:len(m)] == m), None)
        checked = free or path
        assert exists(theirs, checked), (
            f"charts/mlplane-stack/values.yaml sets {name}.{'.'.join(path)}, but {'.'.join(checked)} is not in "
            f"{upstream(name, 'values.yaml')}: Helm would ignore it")


def test_the_key_check_catches_a_misspelt_key() -> None:
    assert exists(upstream_values("gpu-operator"), ("dcgmExporter", "serviceMonitor", "honorLabels"))
    assert not exists(upstream_values("gpu-operator"), ("dcgmExporter", "serviceMonitor", "honourLabels"))
    assert not exists(upstream_values("kserve-resources"), ("controller", "deploymentMode"))  # under kserve.


def test_gpu_metrics_keep_the_workloads_labels() -> None:
    """Decided once: the DCGM exporter's scrape honours its pod/namespace labels (default false upstream)."""
    assert upstream_values("gpu-operator")["dcgmExporter"]["serviceMonitor"]["honorLabels"] is False
    monitor = stack_values()["gpu-operator"]["dcgmExporter"]["serviceMonitor"]
    assert monitor == {"enabled": True, "honorLabels": True}
    spec = stack_values()["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert "honorLabels: true" in (REPO_ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")


def test_kserve_runs_without_knative_and_keda_crds_survive_an_uninstall() -> None:
    assert upstream_values("kserve-resources")["kserve"]["controller"]["deploymentMode"] == "Knative"
    assert stack_values()["kserve-resources"]["kserve"]["controller"]["deploymentMode"] == "RawDeployment"
    assert stack_values()["keda"]["crds"]["additionalAnnotations"] == {"helm.sh/resource-policy": "keep"}
    template = upstream("keda", "templates", "crds", "crd-scaledobjects.yaml").read_text(encoding="utf-8")
    assert ".Values.crds.additionalAnnotations" in template.split("labels:")[0]  # lands on the CRD's annotations
    assert stack_values()["cert-manager"]["crds"] == {"enabled": True}
    assert upstream_values("cert-manager")["crds"] == {"enabled": False, "keep": True}

