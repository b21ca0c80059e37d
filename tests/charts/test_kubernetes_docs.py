"""The Kubernetes examples in README.md and docs/kubernetes.md match the charts and the CRD they describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from chart_helpers import CHARTS
from k8s_schema_helpers import REPO_ROOT, errors, validator_for

README = REPO_ROOT / "README.md"
GUIDE = REPO_ROOT / "docs" / "kubernetes.md"
CRD = CHARTS / "mlplane-crds" / "templates" / "modeldeployments.mlplane.io.yaml"


def _crd_version() -> dict:
    return yaml.safe_load(CRD.read_text(encoding="utf-8"))["spec"]["versions"][0]


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.mark.parametrize("doc", [README, GUIDE], ids=["README", "kubernetes.md"])
def test_get_modeldeployments_shows_the_crds_printer_columns(doc: Path) -> None:
    shown = [line for block in _blocks(doc, "(?:bash|sh)") for line in block.splitlines()
             if line.startswith("# NAME ")]
    assert shown, f"{doc.name} shows no `kubectl get modeldeployments` output"
    columns = [c["name"].upper() for c in _crd_version()["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    for line in shown:
        assert line.removeprefix("# ").split() == ["NAME", *columns]
    assert "-o wide" in doc.read_text(encoding="utf-8")  # where the priority-1 URL column is


@pytest.mark.parametrize("source", ["examples/iris/deployment.yaml", "docs/kubernetes.md"])
def test_applied_examples_are_valid_modeldeployments_for_the_api_server(source: str) -> None:
    if source.endswith(".md"):
        (text,) = [b for b in _blocks(GUIDE, "yaml") if "kind: ModelDeployment" in b]
    else:
        text = (REPO_ROOT / source).read_text(encoding="utf-8")
    obj = yaml.safe_load(text)
    validator = validator_for(_crd_version()["schema"]["openAPIV3Schema"], check=False)
    assert errors(validator, obj) == []


def test_every_chart_and_command_the_docs_name_exists() -> None:
    text = README.read_text(encoding="utf-8") + GUIDE.read_text(encoding="utf-8")
    for chart in set(re.findall(r"charts/(mlplane[-a-z]*)", text)):
        assert (CHARTS / chart / "Chart.yaml").is_file(), chart
    assert "mlplane cluster install" in text and "mlplane cluster uninstall" in text


def _helm_installs(block: str) -> list[dict]:
    """Each `helm install` of a shell block: release, chart, version, repo, namespace and --set values."""
    import shlex

    import helm_python

    from mlplane.k8s.helm_plan import coalesce

    installs = []
    for command in block.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if words[:2] != ["helm", "install"]:
            continue
        release, chart, *rest = words[2:]
        entry: dict = {"release": release, "chart": chart, "values": {}, "version": None, "repo": None}
        options = iter(rest)
        for word in options:
            if word == "--set":
                entry["values"] = coalesce(entry["values"], helm_python.parse_set_string(next(options)))
            elif word in ("--version", "--repo", "-n"):
                entry[{"--version": "version", "--repo": "repo", "-n": "namespace"}[word]] = next(options)
            elif word == "-f":
                entry["values_file"] = next(options)
        installs.append(entry)
    return installs


def test_the_plain_helm_install_is_the_same_plan_as_mlplane_cluster_install() -> None:
    from mlplane.k8s import helm_plan

    blocks = [b for b in _blocks(GUIDE, "sh") if ("helm install" in b and "cert-manager" in b) or "milvus milvus" in b]
    documented = [i for b in blocks for i in _helm_installs(b)]
    plan = helm_plan.install_plan({}, namespace="mlplane", charts_dir=CHARTS, include=["milvus"])
    order = [s.release for s in plan]
    main = [d["release"] for d in documented if d["release"] != "milvus"]
    assert main == [r for r in order if r != "milvus"], "docs/kubernetes.md installs in another order"
    for doc, step in zip(sorted(documented, key=lambda d: order.index(d["release"])), plan, strict=True):
        assert doc["namespace"] == step.namespace, step.release
        if step.local:
            assert REPO_ROOT / doc["chart"] == step.chart, step.release
            continue
        assert (doc["chart"], doc["version"], doc["repo"]) == (step.chart, step.version, step.repo_url), step.release
        assert doc["values"] == dict(step.values), f"{step.release}: --set differs from charts/mlplane-stack values"
