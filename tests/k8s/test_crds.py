"""The CRDs generated from the spec: committed copies current, structural, and enforcing the spec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_schema_helpers import REPO_ROOT, errors, validator_for

from mlplane.k8s import crds

K8S_VERSION = "1.32"
EXAMPLES = REPO_ROOT / "examples"
GOOD = REPO_ROOT / "tests" / "fixtures" / "specs" / "good"
CHART = REPO_ROOT / "charts" / "mlplane-crds"
BY_KIND = {kind.kind: kind for kind in crds.KINDS}

# Keywords a structural schema must not contain (apiextensions/v1 rejects or prunes them).
FORBIDDEN = {"$ref", "$defs", "definitions", "title", "const", "oneOf", "allOf", "not", "$schema"}


def _schema(kind: str) -> dict[str, Any]:
    return crds.crd_for(BY_KIND[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("path", sorted(crds.generate()), ids=lambda p: p.name)
def test_committed_crd_is_current(path: Path) -> None:
    assert path.is_file(), f"{path} missing: run `{crds.COMMAND}`"
    assert path.read_text(encoding="utf-8") == crds.generate()[path], (
        f"stale CRD: run `{crds.COMMAND}` and commit the result")


def test_check_mode_passes() -> None:
    assert crds.main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generated = crds.generate(tmp_path)
    for path, text in generated.items():
        path.write_text(text, encoding="utf-8")
    stale = next(iter(generated))
    stale.write_text("# edited by hand\n", encoding="utf-8")
    from mlplane._generated import generator_main
    assert generator_main(crds.COMMAND, "test", lambda: crds.generate(tmp_path), ["--check"]) == 1
    assert stale.name in capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    crd = crds.crd_for(BY_KIND[kind])
    assert kubernetes_validate.validate(crd, K8S_VERSION, strict=True) == K8S_VERSION
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["group"] == "mlplane.io" and version["name"] == "v1alpha1"
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}


def _walk(node: dict[str, Any], path: str) -> list[str]:
    """Structural-schema rule violations under `node`."""
    problems = [f"{path}: forbidden keyword {k}" for k in FORBIDDEN & node.keys()]
    int_or_string = node.get("x-kubernetes-int-or-string")
    if "type" not in node and not int_or_string and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "anyOf" in node and not (int_or_string and node["anyOf"] == [{"type": "integer"}, {"type": "string"}]):
        problems.append(f"{path}: anyOf other than int-or-string")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false")
    if node.get("exclusiveMinimum") is not None and not isinstance(node["exclusiveMinimum"], bool):
        problems.append(f"{path}: exclusiveMinimum must be a boolean in OpenAPI v3")
    if node.get("type") == "object" and path != ".metadata" and not (
            "properties" in node or "additionalProperties" in node
            or node.get("x-kubernetes-preserve-unknown-fields")):
        problems.append(f"{path}: object without properties")
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{path}: array without items")
    for name, sub in node.get("properties", {}).items():
        problems += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert _walk(schema, "") == []
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert "status" in schema["properties"]
    # Every field keeps its description (kubectl explain shows them).
    undocumented = [p for p in _paths(schema, "") if not p[1].get("description")]
    assert undocumented == [], [p[0] for p in undocumented]


def _paths(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, sub in node.get("properties", {}).items():
        if name != "metadata":
            out.append((f"{path}.{name}", sub))
            out += _paths(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _paths(node["items"], f"{path}[]")
    return out


def test_model_deployment_names_and_columns() -> None:
    crd = crds.crd_for(BY_KIND["ModelDeployment"])
    assert crd["metadata"]["name"] == "modeldeployments.mlplane.io"
    assert crd["spec"]["names"]["shortNames"] == ["md", "mdep"]
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status', "Model": ".spec.model",
        "Version": ".status.servedVersion", "Runtime": ".spec.runtime", "GPUs": ".spec.resources.gpus",
        "URL": ".status.url", "Age": ".metadata.creationTimestamp"}
    assert crds.crd_for(BY_KIND["Platform"])["spec"]["names"]["shortNames"] == ["mlp"]


def test_runtime_has_no_server_default() -> None:
    """The API server must not fill in `runtime`: the platform's defaultRuntime applies instead."""
    runtime = _schema("ModelDeployment")["properties"]["spec"]["properties"]["runtime"]
    assert "default" not in runtime and runtime["enum"] == ["kserve", "triton", "ray"]


def _spec_documents() -> list[tuple[str, dict[str, Any]]]:
    paths = [*sorted(EXAMPLES.glob("*/*.yaml")), *sorted(GOOD.glob("*.yaml"))]
    docs = [(f"{p.name}#{i}", d) for p in paths for i, d in enumerate(yaml.safe_load_all(p.read_text()))
            if isinstance(d, dict)]
    assert len(docs) >= 8, f"expected the example and fixture specs, found {len(docs)}"
    return docs


@pytest.mark.parametrize(("name", "doc"), _spec_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_good_specs_validate_against_the_crd(name: str, doc: dict[str, Any]) -> None:
    assert errors(validator_for(_schema(doc["kind"])), doc) == []


_BASE = {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
         "spec": {"model": "models:/iris@champion",
                  "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "target": {"metric": "rps", "value": 5}},
                  "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "gpus": 1}}}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_BASE)
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    node[leaf] = value
    return doc


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("spec.runtime", "tensorflow", "spec.runtime"),
    ("spec.autoscaling.maxReplicas", 0, "spec.autoscaling.maxReplicas"),
    ("spec.autoscaling.target.metric", "latency", "spec.autoscaling.target.metric"),
    ("spec.autoscaling.target.value", 0, "spec.autoscaling.target.value"),
    ("spec.resources.gpus", -1, "spec.resources.gpus"),
    ("spec.resources.requests.memory", "2GB", "spec.resources.requests.memory"),
    ("spec.replicas", "two", "spec.replicas"),
    ("spec.retrieval", {"collection": "docs", "topK": 101}, "spec.retrieval.topK"),
    ("spec.modle", "typo", "spec"),
])
def test_bad_specs_are_rejected(path: str, value: Any, expected: str) -> None:
    validator = validator_for(_schema("ModelDeployment"))
    assert errors(validator, _BASE) == []
    found = errors(validator, _with(path, value))
    assert any(e.startswith(expected + ":") for e in found), found


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2" and chart["name"] == "mlplane-crds" and chart["version"] == "0.1.0"
    templates = sorted(p.name for p in (CHART / "templates").glob("*.yaml"))
    assert templates == sorted(kind.filename for kind in crds.KINDS)


def test_chart_renders_with_helm_to_the_generated_crds() -> None:
    """The real Helm engine (helm-python-sdk) renders the chart to exactly the generated CRDs."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render(name="mlplane-crds", namespace="mlplane-system")
    rendered = sorted((yaml.safe_load(text) for text in manifests.values()), key=lambda o: o["metadata"]["name"])
    assert rendered == sorted(crds.crds(), key=lambda o: o["metadata"]["name"])
    report = helm_python.lint(str(CHART), strict=True, kube_version="v1.32.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def _nodes_with_rules(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)] if "x-kubernetes-validations" in node else []
    for name, child in node.get("properties", {}).items():
        found += _nodes_with_rules(child, f"{path}.{name}")
    if "items" in node:
        found += _nodes_with_rules(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_cel_rules_stay_within_the_api_servers_cost_budget(kind: str) -> None:
    """Rules iterating a list or map (all/exists/exists_one/in) only do so over bounded ones (maxItems or
    maxProperties), so the API server's static cost estimate accepts the CRD."""
    import re
    nodes = _nodes_with_rules(_schema(kind))
    assert nodes, "the spec's cross-field rules should be in the CRD"
    for path, node in nodes:
        for entry in node["x-kubernetes-validations"]:
            assert set(entry) <= {"rule", "message", "fieldPath"} and entry["message"], entry
            for field in re.findall(r"self\.(\w+)\.(?:all|exists|exists_one)\(", entry["rule"]) + re.findall(
                    r" in self\.(\w+)", entry["rule"]):
                prop = node["properties"][field]
                assert "maxItems" in prop or "maxProperties" in prop, (path, field, entry["rule"])
