"""One rule set: every cross-field rule refuses its bad example in `validate` (exit 2, field path) and in
the generated CRD's CEL (evaluated with celpy), and the good example passes both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from mlplane.k8s import crds
from mlplane.spec import SpecError, load_dict, rules
from mlplane.spec.common import SpecModel

API = "mlplane.io/v1alpha1"


def md(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": "m"},
            "spec": {"model": "models:/m@champion", **spec}}


def pf(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Platform", "metadata": {"name": "p"}, "spec": spec}


# rule name → (object path the rule sits on, bad document, good document)
EXAMPLES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "canary-without-autoscaling": (
        "spec", md({"rollout": {"canaryTrafficPercent": 10}, "autoscaling": {"maxReplicas": 2}}),
        md({"rollout": {"canaryTrafficPercent": 10}})),
    "rollout-not-ray": (
        "spec", md({"runtime": "ray", "rollout": {"allowOutage": True}}),
        md({"runtime": "triton", "rollout": {"allowOutage": True}})),
    "canary-not-triton": (
        "spec", md({"runtime": "triton", "rollout": {"canaryTrafficPercent": 10}}),
        md({"runtime": "kserve", "rollout": {"canaryTrafficPercent": 10}})),
    "rag-needs-ray": ("spec", md({"runtime": "kserve", "rag": {}}), md({"runtime": "ray", "rag": {}})),
    "retrieval-needs-ray": (
        "spec", md({"runtime": "kserve", "retrieval": {"collection": "docs"}}),
        md({"runtime": "ray", "retrieval": {"collection": "docs"}})),
    "features-need-kserve": (
        "spec", md({"runtime": "triton", "features": {"entityKey": "id", "features": ["v:a"]}}),
        md({"runtime": "kserve", "features": {"entityKey": "id", "features": ["v:a"]}})),
    "batching-not-kserve": (
        "spec", md({"runtime": "kserve", "batching": {"maxBatchSize": 8, "maxLatencyMs": 5}}),
        md({"runtime": "triton", "batching": {"maxBatchSize": 8, "maxLatencyMs": 5}})),
    "instances-need-triton": ("spec", md({"runtime": "kserve", "instances": 2}),
                              md({"runtime": "triton", "instances": 2})),
    "ray-scales-on-requests-in-flight": (
        "spec", md({"runtime": "ray", "autoscaling": {"maxReplicas": 2,
                                                      "target": {"metric": "gpu-utilization", "value": 70}}}),
        md({"runtime": "ray", "autoscaling": {"maxReplicas": 2, "target": {"metric": "concurrency", "value": 4}}})),
    "preferred-batch-sizes-need-triton": (
        "spec", md({"runtime": "ray", "batching": {"maxBatchSize": 8, "maxLatencyMs": 1, "preferredBatchSizes": [4]}}),
        md({"runtime": "ray", "batching": {"maxBatchSize": 8, "maxLatencyMs": 1}})),
    "remote-generator-without-gpus": (
        "spec", md({"runtime": "ray", "resources": {"gpus": 1}, "rag": {"generator": {"type": "extractive"}}}),
        md({"runtime": "ray", "resources": {"gpus": 1}, "rag": {"generator": {"type": "local"}}})),
    "max-replicas-at-least-min": ("spec.autoscaling", md({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),
                                  md({"autoscaling": {"minReplicas": 2, "maxReplicas": 2}})),
    "gpu-type-needs-gpus": ("spec.resources", md({"resources": {"gpuType": "NVIDIA-L4"}}),
                            md({"resources": {"gpuType": "NVIDIA-L4", "gpus": 1}})),
    "preferred-batch-sizes-fit": (
        "spec.batching",
        md({"runtime": "triton", "batching": {"maxBatchSize": 8, "maxLatencyMs": 1, "preferredBatchSizes": [4, 16]}}),
        md({"runtime": "triton", "batching": {"maxBatchSize": 8, "maxLatencyMs": 1, "preferredBatchSizes": [4, 8]}})),
    "defaults-name-features": (
        "spec.features", md({"features": {"entityKey": "id", "features": ["v:a"], "defaults": {"v:b": 1}}}),
        md({"features": {"entityKey": "id", "features": ["v:a"], "defaults": {"v:a": 1}}})),
    "entity-key-not-a-feature": (
        "spec.features", md({"features": {"entityKey": "id", "features": ["v:a", "w:id"]}}),
        md({"features": {"entityKey": "id", "features": ["v:a", "w:idx", "id:b"]}})),
    "unique-feature-names": (
        "spec.features", md({"features": {"entityKey": "id", "features": ["v:a", "w:a"]}}),
        md({"features": {"entityKey": "id", "features": ["v:a", "w:b", "v:b2"]}})),
    "remote-generator-needs-url": (
        "spec.rag.generator", md({"runtime": "ray", "rag": {"generator": {"type": "openai"}}}),
        md({"runtime": "ray", "rag": {"generator": {"type": "openai", "url": "http://llm:8080"}}})),
    "kserve-v2-needs-model-name": (
        "spec.rag.generator", md({"runtime": "ray", "rag": {"generator": {"type": "kserve-v2", "url": "http://l"}}}),
        md({"runtime": "ray", "rag": {"generator": {"type": "kserve-v2", "url": "http://l", "modelName": "llm"}}})),
    "external-tracking-needs-uri": ("spec.tracking", pf({"tracking": {"mode": "external"}}),
                                    pf({"tracking": {"mode": "external", "uri": "http://mlflow:5000"}})),
    "milvus-needs-uri": ("spec.vectorStore", pf({"vectorStore": {"enabled": True, "backend": "milvus"}}),
                         pf({"vectorStore": {"enabled": True, "backend": "milvus", "uri": "http://milvus:19530"}})),
    "unique-collection-names": (
        "spec.vectorStore",
        pf({"vectorStore": {"collections": [{"name": "d", "source": "/a"}, {"name": "d", "source": "/b"}]}}),
        pf({"vectorStore": {"collections": [{"name": "d", "source": "/a"}, {"name": "e", "source": "/b"}]}})),
    "chunk-overlap-below-size": (
        "spec.vectorStore.collections[0]",
        pf({"vectorStore": {"collections": [{"name": "d", "source": "/a", "chunkSize": 64, "chunkOverlap": 64}]}}),
        pf({"vectorStore": {"collections": [{"name": "d", "source": "/a", "chunkSize": 64, "chunkOverlap": 32}]}})),
}


def all_rules() -> dict[str, rules.Rule]:
    found: dict[str, rules.Rule] = {}
    for kind in crds.KINDS:
        for model in crds.spec_models(kind.model).values():
            for rule in getattr(model, "RULES", ()):
                found[rule.name] = rule
    return found


RULES = all_rules()


def test_every_rule_has_examples() -> None:
    assert sorted(EXAMPLES) == sorted(RULES)
    assert SpecModel.RULES == ()


def _steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        out.append(name)
        if index:
            out.append(int(index.rstrip("]")))
    return out


def _at(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], Any]:
    """(CRD schema node, object) at `path` of `doc`."""
    crd = crds.crd_for(next(k for k in crds.KINDS if k.kind == doc["kind"]))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj: Any = doc
    for step in _steps(path):
        if isinstance(step, int):
            schema, obj = schema["items"], obj[step]
        else:
            schema, obj = schema["properties"][step], obj[step]
    return schema, obj


def _cel_holds(doc: dict[str, Any], path: str, rule: rules.Rule) -> bool:
    """Evaluate the rule's CEL exactly as the generated CRD carries it, on the object at `path`."""
    schema, obj = _at(doc, path)
    entry = next(v for v in schema["x-kubernetes-validations"] if v["message"] == rule.message)
    assert entry["rule"] == rule.cel
    env = celpy.Environment()
    program = env.program(env.compile(entry["rule"]))
    return bool(program.evaluate({"self": celpy.json_to_cel(obj)}))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_rule_refuses_its_bad_example_in_validate_and_cel(name: str) -> None:
    path, bad, good = EXAMPLES[name]
    rule = RULES[name]
    with pytest.raises(SpecError) as info:
        load_dict(bad)
    located = [p for p in info.value.problems if p.path == path]
    assert located, (path, str(info.value))
    if rule.explain is None:
        assert rule.message in located[0].message
    load_dict(good)
    if rule.cel is None:  # Python-only: said why, and not in the CRD (the API server accepts it)
        assert rule.python_only
        schema, _ = _at(bad, path)
        assert rule.message not in [v["message"] for v in schema.get("x-kubernetes-validations", [])]
        return
    assert not rule.python_only
    assert _cel_holds(bad, path, rule) is False
    assert _cel_holds(good, path, rule) is True


def _opaque(schema: dict[str, Any]) -> bool:
    """A free-form object (preserve-unknown-fields, no declared fields): kube-apiserver's CEL sees no keys."""
    return (schema.get("type") == "object" and bool(schema.get("x-kubernetes-preserve-unknown-fields"))
            and not schema.get("properties") and not schema.get("additionalProperties"))


def test_cel_reads_only_fields_the_api_server_exposes_to_cel() -> None:
    """kube-apiserver compiles every rule when the CRD is created: a rule that looks into a free-form object
    (``x-kubernetes-preserve-unknown-fields``) does not compile there, though celpy evaluates it."""
    import re
    for name, (path, bad, _) in EXAMPLES.items():
        rule = RULES[name]
        if rule.cel is None:
            continue
        schema, _ = _at(bad, path)
        for match in re.finditer(r"(has\()?self\.(\w+)", rule.cel):
            prop = schema["properties"][match.group(2)]
            assert match.group(1) or not _opaque(prop), (name, match.group(2), rule.cel)


def test_strings_compared_inside_a_macro_are_bounded() -> None:
    """The API server's static cost estimate multiplies a macro's iterations by the cost of what it compares;
    an unbounded string counts as a whole request (3 MB), which puts these rules over the budget."""
    spec = _at(md({}), "spec")[0]["properties"]
    features = spec["features"]["properties"]
    assert features["features"]["maxItems"] <= 256 and features["entityKey"]["maxLength"] <= 255
    platform = _at(pf({}), "spec")[0]["properties"]
    collections = platform["vectorStore"]["properties"]["collections"]
    assert collections["maxItems"] <= 64 and collections["items"]["properties"]["name"]["maxLength"] <= 255


def test_validate_exits_2_naming_every_rule(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    docs = []
    for i, name in enumerate(sorted(EXAMPLES)):
        bad = yaml.safe_load(yaml.safe_dump(EXAMPLES[name][1]))
        bad["metadata"]["name"] = f"r{i}"
        docs.append(bad)
    spec.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mlplane", "validate", "-f", str(spec)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for i, name in enumerate(sorted(EXAMPLES)):
        path = EXAMPLES[name][0]
        assert f'"r{i}"): {path}: ' in out, (name, out)


def test_render_checks_the_rules_with_the_platforms_default_runtime() -> None:
    """A deployment naming no runtime passes validate and the CRD; the render knows the runtime and refuses."""
    from mlplane.k8s import ResolvedArtifact, render
    from mlplane.spec import Platform
    dep = load_dict(md({"autoscaling": {"maxReplicas": 2, "target": {"metric": "gpu-utilization", "value": 70}}}))
    ray_default = Platform.model_validate({"metadata": {"name": "p"}, "spec": {"serving": {"defaultRuntime": "ray"}}})
    with pytest.raises(ValueError, match="scales on requests in flight"):
        render(dep, ray_default, ResolvedArtifact("1", "s3://b/m"))  # type: ignore[arg-type]
