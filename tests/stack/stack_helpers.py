"""The upstream charts' data (../shared/upstream-charts) and the stack chart, for the tests of tests/stack."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplane._generated import REPO_ROOT

UPSTREAM = REPO_ROOT.parent / "shared" / "upstream-charts"
STACK = REPO_ROOT / "charts" / "mlplane-stack"
# The namespace rendered-kinds.json was rendered in (its inject-ca-from values name it).
RENDERED_NAMESPACE = "stack"
# Where the data records a placeholder chart version on the upstream default branch, the README says
# which release tag the snapshot equals; those tags are what the stack pins.
PLACEHOLDER_TAGS = {
    ("cert-manager", "v0.0.0"): "v1.21.1",
    ("kuberay-operator", "1.1.0"): "1.7.0",
    ("gpu-operator", "v1.0.0-devel"): "v26.7.0",
}



class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader, reading YAML 1.1's `=` value tag (in the Prometheus operator's CRDs) as a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
_LOADER = _Loader
# The CRD files of the pinned charts whose kinds mlplane renders.
PINNED_CRD_FOLDERS = ("kserve-crd/templates", "keda/templates/crds", "kuberay-operator/crds",
                      "kube-prometheus-stack/charts/crds/crds")


def upstream(*parts: str) -> Path:
    """A path in the upstream charts' data; fails saying where it looked when the data is missing."""
    path = UPSTREAM.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"upstream chart data not found: looked for {path} (`../shared/upstream-charts/` from the "
                    f"repository root {REPO_ROOT}); restore the shared test data (see its README.md)")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


@cache
def rendered_kinds() -> dict[str, Any]:
    return json.loads(upstream("rendered-kinds.json").read_text(encoding="utf-8"))


@cache
def upstream_values(chart: str) -> dict[str, Any]:
    return load_yaml(upstream(chart, "values.yaml")) or {}


def stack_values() -> dict[str, Any]:
    return load_yaml(STACK / "values.yaml")


def crd_documents(path: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in a YAML file (Helm-templated CRD files are plain YAML here)."""
    text = path.read_text(encoding="utf-8")
    if "{{" in text:  # a Helm template (KEDA's CRDs): drop the directive lines, blank inline actions
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("{{")]
        text = re.sub(r"\{\{.*?\}\}", "templated", "\n".join(lines))
    docs = yaml.load_all(text, Loader=_LOADER)
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]


def group_kind(crd: dict[str, Any]) -> str:
    return f"{crd['spec']['names']['kind']}.{crd['spec']['group']}"


@cache
def crds_folder_kinds(chart: str) -> frozenset[str]:
    """Group-kinds of the CRDs in the chart's `crds/` folders (its own and its subcharts'), which Helm
    installs before any template of the release."""
    kinds = set()
    for rel in rendered_kinds()[chart]["crdsFolderFiles"]:
        parts = Path(rel).parts
        in_crds_folder = parts[:-1] == ("crds",) or (len(parts) == 4 and parts[0] == "charts" and parts[2] == "crds")
        if in_crds_folder and rel.endswith((".yaml", ".yml")):  # not templates/crds/: those are templates
            kinds.update(group_kind(c) for c in crd_documents(upstream(chart, rel)))
    return frozenset(kinds)


@cache
def pinned_crd(group_kind_name: str) -> dict[str, Any]:
    """The CRD of the pinned chart that defines `Kind.group`, from the upstream data."""
    for folder in PINNED_CRD_FOLDERS:
        for path in sorted(upstream(*folder.split("/")).glob("*.yaml")):
            for crd in crd_documents(path):
                if group_kind(crd) == group_kind_name:
                    return crd
    pytest.fail(f"no CRD for {group_kind_name} in the pinned charts under {UPSTREAM}")


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return served["schema"]["openAPIV3Schema"]
    pytest.fail(f"{crd['metadata']['name']} serves no version {version!r}")
