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
