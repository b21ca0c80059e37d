"""Everything mlplane renders is valid for the pinned versions: custom objects against the CRDs of the
charts the stack installs (../shared/upstream-charts), core objects with kubernetes-validate.

Covers what the operator applies (the goldens of `mlplane render`, kept current by tests/k8s) and the
custom objects of the mlplane chart (its ClusterServingRuntimes). Also the KServe pair: the
controller (v0.20) routes Open Inference Protocol (v2) requests to the runtime the kserve 0.21 model
server implements.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_schema_helpers import errors, validator_for
from stack_helpers import crd_schema, pinned_crd

from mlplane._generated import REPO_ROOT
from mlplane.k8s import versions

GOLDEN = REPO_ROOT / "tests" / "golden" / "render"
K8S_VERSION = "1.32"


def golden_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d['kind']}/{d['metadata']['name']}", d) for p in sorted(GOLDEN.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]


def chart_objects() -> list[tuple[str, dict[str, Any]]]:
    with helm_python.Chart.load(str(REPO_ROOT / "charts" / "mlplane")) as chart:
        manifests = chart.render({}, name="mlplane", namespace="mlplane", is_install=True)
    return [(f"{p}:{d['kind']}/{d['metadata']['name']}", d) for p, t in manifests.items() if p.endswith(".yaml")
            for d in yaml.safe_load_all(t) if d]


def mlplane_crd(kind: str) -> dict[str, Any]:
    """mlplane's own CRD of `kind` (charts/mlplane-crds), installed in the same crds phase."""
    for path in sorted((REPO_ROOT / "charts" / "mlplane-crds" / "templates").glob("*.mlplane.io.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if crd["spec"]["names"]["kind"] == kind:
            return crd
    pytest.fail(f"charts/mlplane-crds has no CRD for {kind}")


@cache
def validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    group, _, version = api_version.rpartition("/")
    crd = mlplane_crd(kind) if group == "mlplane.io" else pinned_crd(f"{kind}.{group}")
    return validator_for(crd_schema(crd, version), check=False)


def check(obj: dict[str, Any]) -> list[str]:
    group = obj["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        return errors(validator(obj["apiVersion"], obj["kind"]), obj)
    assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
    return []


ALL = golden_objects() + chart_objects()


@pytest.mark.parametrize(("where", "obj"), ALL, ids=[w for w, _ in ALL])
def test_every_rendered_object_is_valid_for_the_pinned_versions(where: str, obj: dict[str, Any]) -> None:
    assert check(obj) == []


def test_the_custom_kinds_are_the_pinned_api_versions() -> None:
    seen = {(o["kind"], o["apiVersion"]) for _, o in ALL}
    assert {("InferenceService", versions.INFERENCE_SERVICE_API), ("ScaledObject", versions.SCALED_OBJECT_API),
            ("ServiceMonitor", versions.SERVICE_MONITOR_API), ("RayService", versions.RAY_SERVICE_API),
            ("ClusterServingRuntime", versions.SERVING_RUNTIME_API)} <= seen


def test_a_field_the_pinned_crd_lacks_is_caught() -> None:
    (_, isvc) = next((w, o) for w, o in ALL if o["kind"] == "InferenceService")
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]
    assert any("protocolVersions" in e for e in check(broken))


def test_the_kserve_pair_speaks_the_same_protocol() -> None:
    """InferenceServices ask for the protocol their runtime declares (v2; Triton's clients grpc-v2 only,
    docs/triton-limits.md), and the kserve package serves the v2 routes."""
    runtimes = {o["metadata"]["name"]: o for _, o in ALL if o["kind"] == "ClusterServingRuntime"}
    for _, obj in ALL:
        if obj["kind"] == "InferenceService":
            model = obj["spec"]["predictor"]["model"]
            assert model["protocolVersion"] == {"mlplane-mlflow": "v2", "mlplane-triton": "grpc-v2"}[model["runtime"]]
            assert model["protocolVersion"] in runtimes[model["runtime"]]["spec"]["protocolVersions"]
            assert model["modelFormat"]["name"] in {f["name"] for f in runtimes[model["runtime"]]["spec"]
                                                    ["supportedModelFormats"]}
    # What `python -m mlplane.serving` mounts, asked in a process of its own (kserve's protobuf module and
    # tritonclient's, which other tests import, cannot share one process).
    code = ("from kserve.protocol.rest.v2_endpoints import V2Endpoints as V\n"
            "print(hasattr(V, 'infer') and hasattr(V, 'model_ready'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True"


def test_missing_data_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import stack_helpers

    monkeypatch.setattr(stack_helpers, "UPSTREAM", tmp_path / "nowhere")
    with pytest.raises(pytest.fail.Exception, match=r"looked for .*nowhere/keda"):
        stack_helpers.upstream("keda")
