"""`mlplane.k8s.render`: spec → Kubernetes objects, validated against real schemas, pinned by golden files."""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_schema_helpers import REPO_ROOT, errors, upstream_validator

from mlplane.core.signature import TensorMeta
from mlplane.k8s import ResolvedArtifact, effective_runtime, render
from mlplane.k8s.render import rollout_strategy
from mlplane.k8s.resolve import plan_served
from mlplane.resolution import Signature, resolve_model
from mlplane.spec import ModelDeployment, ModelRef, Platform

K8S_VERSION = "1.32"
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "render"
UPDATE_GOLDEN = os.environ.get("MLPLANE_UPDATE_GOLDEN") == "1"
ARTIFACT = ResolvedArtifact(registry_version="7", storage_uri="s3://mlflow-artifacts/1/abc123/artifacts/model")

PROD_PLATFORM = Platform.model_validate({
    "metadata": {"name": "prod", "namespace": "mlplane-system"},
    "spec": {"gpuNodePool": {
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
    }},
})


def deployment(spec: dict[str, Any], name: str = "iris", namespace: str | None = None,
               labels: dict[str, str] | None = None) -> ModelDeployment:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if namespace:
        metadata["namespace"] = namespace
    return ModelDeployment.model_validate({"metadata": metadata, "spec": {"model": "models:/iris@champion", **spec}})


# name → (deployment, platform, render keyword arguments)
CASES: dict[str, tuple[ModelDeployment, Platform, dict[str, Any]]] = {
    "kserve-cpu": (
        deployment({"runtime": "kserve", "replicas": 2,
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                  "limits": {"cpu": "1", "memory": "1Gi"}}},
                   labels={"team": "ml"}),
        Platform.default(), {},
    ),
    "kserve-gpu-autoscaling": (
        deployment({"runtime": "kserve",
                    "autoscaling": {"minReplicas": 0, "maxReplicas": 4,
                                    "target": {"metric": "gpu-utilization", "value": 70},
                                    "scaleDown": {"stabilizationWindowSeconds": 60}},
                    "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "gpus": 1},
                    "coldStartSeconds": 180.5},
                   name="llm", namespace="ml"),
        Platform.default(), {"gpu_headroom": 1},
    ),
    "triton-gpu-no-headroom": (
        deployment({"runtime": "triton", "model": "models:/ranker/7",
                    "autoscaling": {"minReplicas": 0, "maxReplicas": 6,
                                    "target": {"metric": "queue-depth", "value": 8},
                                    "scaleUp": {"stabilizationWindowSeconds": 30}},
                    "resources": {"limits": {"cpu": "4", "memory": "16Gi"}, "gpus": 2}},
                   name="ranker", namespace="ml"),
        PROD_PLATFORM, {"gpu_headroom": 1},
    ),
    # One GPU per replica and no spare GPU: replace pods one at a time (maxSurge 0).
    "kserve-1gpu-no-headroom": (
        deployment({"runtime": "kserve", "replicas": 2,
                    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "gpus": 1}},
                   name="embedder", namespace="ml"),
        PROD_PLATFORM, {"gpu_headroom": 0},
    ),
    # A whole 8-GPU node per replica: 4 spare GPUs are not enough for a surge pod; KEDA scales on
    # DCGM GPU utilisation and waits at least the 10-minute cold start before scaling down.
    "triton-8gpu-dcgm": (
        deployment({"runtime": "triton", "model": "models:/llm-70b/3",
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                                    "target": {"metric": "gpu-utilization", "value": 80}},
                    "resources": {"requests": {"cpu": "32", "memory": "512Gi"}, "gpus": 8},
                    "coldStartSeconds": 600},
                   name="llm-70b", namespace="ml"),
        PROD_PLATFORM, {"gpu_headroom": 4},
    ),
    "ray": (
        deployment({"runtime": "ray", "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
                    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "gpus": 1}},
                   name="rag", namespace="ml"),
        Platform.default(), {"ray_import_path": "mlplane_rag.app:build"},
    ),
    # A RAG service on GPUs: the Generator on L4s (one per pod), the Embedder on CPU pods beside the
    # Ingress and Retriever; the head has neither replicas nor GPUs.
    "rag-gpu": (
        deployment({"runtime": "ray", "model": "models:/mlplane-generator@champion",
                    "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                                    "target": {"metric": "concurrency", "value": 4}},
                    "resources": {"requests": {"cpu": "4", "memory": "24Gi"}, "limits": {"memory": "24Gi"},
                                  "gpus": 1, "gpuType": "NVIDIA-L4"},
                    "retrieval": {"collection": "docs", "topK": 4},
                    "batching": {"maxBatchSize": 32, "maxLatencyMs": 5},
                    "rag": {"embedder": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}}},
                   name="rag", namespace="ml"),
        PROD_PLATFORM, {},
    ),
    # One replica, one GPU, no spare GPU: the new version waits for a free GPU (surge) instead of an
    # outage, and the PDB keeps a drain from evicting the only pod.
    "kserve-1gpu-single-replica": (
        deployment({"runtime": "kserve", "replicas": 1,
                    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "gpus": 1, "gpuType": "NVIDIA-L4"}},
                   name="scorer", namespace="ml"),
        PROD_PLATFORM, {"gpu_headroom": 0},
    ),
}


class RegistryState:
    """A registry state as data for the golden cases: every reference pins version 7 of an iris-shaped
    model in S3. The real MLflow path of the same resolution is tests/operator/test_resolution.py."""

    tracking_uri = "http://mlplane-mlflow.mlplane.svc:5000"
    location = ARTIFACT.storage_uri

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        return ARTIFACT.registry_version, self.location

    def signature(self, model_uri: str, location: str = "") -> Signature:
        inputs = [TensorMeta(f"f{i}", "FP64", (-1,)) for i in range(4)]
        return Signature(inputs, [TensorMeta("output-0", "INT64", (-1,))])


def rendered(case: str) -> list[dict[str, Any]]:
    """What `mlplane render` prints for the case: resolution (shared with the supervisor and the operator),
    the cluster's storage URI on top, then the render."""
    dep, platform, kwargs = CASES[case]
    registry = RegistryState()
    resolved = resolve_model(dep, platform, registry)
    served = plan_served(dep, platform, resolved, registry.tracking_uri,
                         ("abc123", registry.location.rsplit("/", 1)[0]))
    return render(dep, platform, served.artifact, **kwargs)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(set(kinds)) == len(kinds), kinds
    return {o["kind"]: o for o in objects}


# --------------------------------------------------------------------------- schemas
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CUSTOM_VERSIONS = {"InferenceService": "v1beta1", "ScaledObject": "v1alpha1", "RayService": "v1"}


def assert_service_monitor_shape(obj: dict[str, Any]) -> None:
    """monitoring.coreos.com has no CRD in ../shared/crds: check the fields we rely on."""
    spec = obj["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["selector"]["matchLabels"] and all(isinstance(v, str) for v in spec["selector"]["matchLabels"].values())
    assert spec["namespaceSelector"] == {"matchNames": [obj["metadata"]["namespace"]]}
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "targetPort", "path", "interval", "scheme"}
        assert isinstance(endpoint["targetPort"], int) and endpoint["path"].startswith("/")
        assert re.fullmatch(r"\d+s", endpoint["interval"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_matches_its_schema(case: str) -> None:
    for obj in rendered(case):
        meta = obj["metadata"]
        assert meta["namespace"] and "ownerReferences" not in meta
        assert all(_LABEL_VALUE.match(v) and len(v) <= 63 for v in meta["labels"].values()), meta["labels"]
        group, _, version = obj["apiVersion"].rpartition("/")
        if obj["kind"] == "PodDisruptionBudget":
            assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
        elif obj["kind"] == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert_service_monitor_shape(obj)
        else:
            assert version == _CUSTOM_VERSIONS[obj["kind"]], obj["apiVersion"]
            assert errors(upstream_validator(obj["kind"], version), obj) == [], obj["kind"]


def test_schema_check_catches_a_misplaced_field() -> None:
    """The CRD validation is strict enough to matter: a field KServe does not know is an error."""
    isvc = by_kind(rendered("kserve-cpu"))["InferenceService"]
    isvc["spec"]["predictor"]["rollingUpdate"] = {"maxSurge": 1}
    found = errors(upstream_validator("InferenceService", "v1beta1"), isvc)
    assert any("rollingUpdate" in e for e in found), found


# --------------------------------------------------------------------------- golden files
def _golden_text(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    path = GOLDEN_DIR / f"{case}.yaml"
    text = _golden_text(rendered(case))
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path} missing: run `MLPLANE_UPDATE_GOLDEN=1 pytest tests/k8s` and review the new file")
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            f"golden/{path.name}", "rendered"))
        pytest.fail(f"rendered objects differ from {path.relative_to(REPO_ROOT)}; if the change is intended, "
                    f"run `MLPLANE_UPDATE_GOLDEN=1 pytest tests/k8s` and review the diff:\n{diff}")


def test_no_stray_golden_files() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.yaml")) == sorted(CASES)


# --------------------------------------------------------------------------- behaviour
def test_kserve_cpu_objects() -> None:
    objs = by_kind(rendered("kserve-cpu"))
    assert list(objs) == ["InferenceService", "PodDisruptionBudget", "ServiceMonitor"]
    isvc = objs["InferenceService"]
    assert isvc["metadata"]["namespace"] == "default"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert "serving.kserve.io/autoscalerClass" not in isvc["metadata"]["annotations"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"] == {
        "modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "runtime": "mlplane-mlflow",
        "storageUri": ARTIFACT.storage_uri,
        # the Platform's serving limits, appended by KServe to the runtime's args (as locally)
        "args": ["--max-request-bytes=16777216", "--grace-period=30"],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    labels = isvc["metadata"]["labels"]
    assert labels["team"] == "ml"
    assert labels["app.kubernetes.io/part-of"] == labels["app.kubernetes.io/managed-by"] == "mlplane"
    assert objs["PodDisruptionBudget"]["spec"] == {
        "maxUnavailable": 1,  # two replicas: one may go, never the last
        "selector": {"matchLabels": {"mlplane.io/deployment": "iris", "app.kubernetes.io/component": "predictor"}}}
    pod_labels = predictor["labels"]
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_version_label_and_storage_uri(case: str) -> None:
    for obj in rendered(case):
        assert obj["metadata"]["labels"]["mlplane.io/model-version"] == "7"
        assert obj["metadata"]["labels"]["mlplane.io/deployment"] == CASES[case][0].metadata.name
    kinds = by_kind(rendered(case))
    if "InferenceService" in kinds:
        storage = kinds["InferenceService"]["spec"]["predictor"]["model"]["storageUri"]
        if effective_runtime(*CASES[case][:2]) == "triton":  # the generated repository, stored with the run
            run = ARTIFACT.storage_uri.rsplit("/", 1)[0]
            archive = re.escape(run) + r"/triton-repository/7/[0-9a-f]+/repository\.tar\.gz"
            assert re.fullmatch(archive, storage), storage
        else:  # kserve serves the S3 location itself
            assert storage == ARTIFACT.storage_uri
    else:
        serve = yaml.safe_load(kinds["RayService"]["spec"]["serveConfigV2"])
        generator = next(d for d in serve["applications"][0]["deployments"] if d["name"] == "Generator")
        assert generator["user_config"]["model_uri"] == ARTIFACT.storage_uri


def test_version_label_is_sanitised() -> None:
    dep, platform, _ = CASES["kserve-cpu"]
    objs = render(dep, platform, ResolvedArtifact("run/abc:1+x", "s3://b/m"))
    assert objs[0]["metadata"]["labels"]["mlplane.io/model-version"] == "run-abc-1-x"


@pytest.mark.parametrize("case", ["kserve-gpu-autoscaling", "triton-gpu-no-headroom", "kserve-1gpu-no-headroom",
                                  "triton-8gpu-dcgm", "kserve-1gpu-single-replica"])
def test_gpu_deployments_get_placement_and_limits(case: str) -> None:
    dep, platform, _ = CASES[case]
    predictor = by_kind(rendered(case))["InferenceService"]["spec"]["predictor"]
    pool = platform.spec.gpu_node_pool
    product = {"nvidia.com/gpu.product": dep.spec.resources.gpu_type} if dep.spec.resources.gpu_type else {}
    assert predictor["nodeSelector"] == {**pool.node_selector, **product}
    assert predictor["tolerations"] == [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    assert predictor["model"]["resources"]["limits"][pool.gpu_resource_name] == str(dep.spec.resources.gpus)
    assert pool.gpu_resource_name not in predictor["model"]["resources"].get("requests", {})


def test_gpu_resource_name_comes_from_the_platform() -> None:
    platform = Platform.model_validate({"metadata": {"name": "amd"},
                                        "spec": {"gpuNodePool": {"gpuResourceName": "amd.com/gpu"}}})
    dep = deployment({"resources": {"gpus": 1}})
    limits = render(dep, platform, ARTIFACT)[0]["spec"]["predictor"]["model"]["resources"]["limits"]
    assert limits == {"amd.com/gpu": "1"}


@pytest.mark.parametrize(("gpus", "headroom", "surge", "unavailable"), [
    (0, 0, "25%", 0),
    (1, 0, 0, 1),
    (1, 1, 1, 0),
    (2, 1, 0, 1),
    (2, 2, 1, 0),
])
def test_rollout_surges_only_into_spare_gpus(gpus: int, headroom: int, surge: Any, unavailable: int) -> None:
    """Two replicas: without spare GPUs one pod at a time is replaced while the other serves."""
    assert rollout_strategy(gpus, headroom) == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    dep = deployment({"replicas": 2, "resources": {"gpus": gpus}})
    strategy = render(dep, Platform.default(), ARTIFACT, gpu_headroom=headroom)[0]["spec"]["predictor"]
    assert strategy["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": surge, "maxUnavailable": unavailable}


def test_negative_headroom_is_refused() -> None:
    with pytest.raises(ValueError, match="gpu_headroom"):
        render(deployment({}), Platform.default(), ARTIFACT, gpu_headroom=-1)


def _scaled(spec: dict[str, Any]) -> dict[str, Any]:
    return by_kind(render(deployment(spec), Platform.default(), ARTIFACT))["ScaledObject"]


@pytest.mark.parametrize(("window", "cold", "expected"), [(300, None, 300), (300, 400, 400), (300, 10.2, 300),
                                                          (0, 90.1, 91)])
def test_scale_down_waits_at_least_a_cold_start(window: int, cold: float | None, expected: int) -> None:
    spec: dict[str, Any] = {"autoscaling": {"maxReplicas": 3, "scaleDown": {"stabilizationWindowSeconds": window}}}
    if cold is not None:
        spec["coldStartSeconds"] = cold
    behavior = _scaled(spec)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == expected
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_scale_to_zero_is_refused_for_gpu_metrics() -> None:
    objs = by_kind(rendered("kserve-gpu-autoscaling"))
    scaled = objs["ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == 1 and "cooldownPeriod" not in scaled["spec"]
    assert "raised to 1" in scaled["metadata"]["annotations"]["mlplane.io/autoscaling-note"]
    assert objs["InferenceService"]["spec"]["predictor"]["minReplicas"] == 1
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metricType"] == "Value" and trigger["metadata"]["threshold"] == "70"
    assert trigger["metadata"]["query"] == (
        'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{namespace="ml",pod=~"llm-predictor-.*"}[2m]))')


def test_scale_to_zero_is_allowed_for_request_metrics() -> None:
    objs = by_kind(rendered("triton-gpu-no-headroom"))
    scaled = objs["ScaledObject"]["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["cooldownPeriod"] == 300
    assert "annotations" not in objs["ScaledObject"]["metadata"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker-predictor"}
    trigger = scaled["triggers"][0]
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"] == (
        'sum(nv_inference_pending_request_count{namespace="ml",pod=~"ranker-predictor-.*"})')
    annotations = objs["InferenceService"]["metadata"]["annotations"]
    assert annotations["serving.kserve.io/autoscalerClass"] == "external"


@pytest.mark.parametrize(("runtime", "metric", "fragment"), [
    ("kserve", "rps", "rate(request_predict_seconds_count{"),
    ("kserve", "concurrency", "rate(request_predict_seconds_sum{"),
    ("triton", "rps", "rate(nv_inference_request_success{"),
    ("triton", "concurrency", "rate(nv_inference_request_duration_us{"),
])
def test_request_metric_queries(runtime: str, metric: str, fragment: str) -> None:
    scaled = _scaled({"runtime": runtime, "autoscaling": {"maxReplicas": 2, "target": {"metric": metric, "value": 3}}})
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    assert fragment in query and 'pod=~"iris-predictor-.*"' in query


def test_triton_flavour() -> None:
    model = by_kind(rendered("triton-gpu-no-headroom"))["InferenceService"]["spec"]["predictor"]["model"]
    assert (model["modelFormat"], model["runtime"]) == ({"name": "triton"}, "mlplane-triton")
    monitor = by_kind(rendered("triton-gpu-no-headroom"))["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["targetPort"] == 8002


def test_runtime_defaults_to_the_platform_default() -> None:
    platform = Platform.model_validate({"metadata": {"name": "p"}, "spec": {"serving": {"defaultRuntime": "triton"}}})
    unnamed = deployment({})
    assert effective_runtime(unnamed, platform) == "triton"
    assert effective_runtime(deployment({"runtime": "kserve"}), platform) == "kserve"
    assert render(unnamed, platform, ARTIFACT)[0]["spec"]["predictor"]["model"]["runtime"] == "mlplane-triton"


def test_ray_service() -> None:
    ray = by_kind(rendered("ray"))["RayService"]
    serve = yaml.safe_load(ray["spec"]["serveConfigV2"])
    assert [a["name"] for a in serve["applications"]] == ["rag"]
    assert serve["applications"][0]["import_path"] == "mlplane_rag.app:build"
    cluster = ray["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    workers, generator = cluster["workerGroupSpecs"]
    assert generator["groupName"] == "generator-gpu"
    assert (generator["minReplicas"], generator["maxReplicas"]) == (1, 4)  # one Generator replica per GPU pod
    pod = generator["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert generator["rayStartParams"] == {"num-cpus": "4", "num-gpus": "1"}
    # The Embedder no longer holds a GPU: it runs on CPU workers with the Ingress and Retriever.
    assert workers["groupName"] == "workers" and "nodeSelector" not in workers["template"]["spec"]
    assert "limits" not in workers["template"]["spec"]["containers"][0]["resources"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0", "num-gpus": "0"}
    assert "nodeSelector" not in head["template"]["spec"]


def test_ray_default_import_path_and_cpu_workers() -> None:
    ray = render(deployment({"runtime": "ray"}), Platform.default(), ARTIFACT)
    (obj,) = ray
    serve = yaml.safe_load(obj["spec"]["serveConfigV2"])
    app = serve["applications"][0]
    assert app["import_path"] == "mlplane.rag.serve_app:build_app"
    # The same application as the local runtime's, with spec.model pinned to the resolved artifact.
    assert app["deployments"][3]["user_config"] == {"model_uri": ARTIFACT.storage_uri, "model_version": "7"}
    assert [d["name"] for d in app["deployments"]] == ["Ingress", "Embedder", "Retriever", "Generator"]
    groups = obj["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["workers", "generator"]
    assert all("tolerations" not in g["template"]["spec"] for g in groups)


def test_render_is_pure() -> None:
    assert rendered("kserve-gpu-autoscaling") == rendered("kserve-gpu-autoscaling")
    dep, _, _ = CASES["kserve-cpu"]
    before = dep.model_dump()
    rendered("kserve-cpu")
    assert dep.model_dump() == before



def test_gpu_headroom_comes_from_the_platform_unless_the_caller_overrides_it():
    dep = deployment({"resources": {"gpus": 1}})
    roomy = Platform.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                     "metadata": {"name": "p"}, "spec": {"gpuNodePool": {"gpuHeadroom": 2}}})

    def strategy(platform, **kwargs):
        return render(dep, platform, ARTIFACT, **kwargs)[0]["spec"]["predictor"]["deploymentStrategy"]

    assert strategy(roomy)["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    # A single replica without headroom waits for a free GPU rather than going down.
    assert strategy(Platform.default())["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    dep = deployment({"replicas": 2, "resources": {"gpus": 1}})
    assert strategy(roomy, gpu_headroom=0)["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


@pytest.mark.parametrize(("case", "gpus", "rolling"), [
    # Two replicas: replace one at a time, the other serves.
    ("kserve-1gpu-no-headroom", "1", {"maxSurge": 0, "maxUnavailable": 1}),
    # minReplicas 1 and 4 spare GPUs < 8: the new pod waits for a free node rather than an outage.
    ("triton-8gpu-dcgm", "8", {"maxSurge": 1, "maxUnavailable": 0}),
])
def test_gpu_pods_surge_only_when_it_costs_no_outage(case: str, gpus: str, rolling: dict[str, int]) -> None:
    predictor = by_kind(rendered(case))["InferenceService"]["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert predictor["deploymentStrategy"] == {"type": "RollingUpdate", "rollingUpdate": rolling}


def test_eight_gpu_replicas_scale_on_dcgm_after_a_cold_start() -> None:
    objs = by_kind(rendered("triton-8gpu-dcgm"))
    scaled = objs["ScaledObject"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 3)
    (trigger,) = scaled["triggers"]
    assert trigger["metadata"]["query"] == (
        'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{namespace="ml",pod=~"llm-70b-predictor-.*"}[2m]))')
    assert trigger["metricType"] == "Value" and trigger["metadata"]["threshold"] == "80"
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


# --------------------------------------------------------------------------- measured cold start
@pytest.mark.parametrize(("spec_cold", "measured", "window", "expected"), [
    (None, 412.3, 300, 413),   # unset in the spec: what the local runtime measured
    (None, 12.0, 300, 300),    # never below the configured window
    (30, 412.3, 0, 30),        # the spec wins over a measurement
    (None, None, 120, 120),    # nothing known: the configured window
])
def test_measured_cold_start_stands_in_for_an_unset_spec(spec_cold: float | None, measured: float | None,
                                                         window: int, expected: int) -> None:
    spec: dict[str, Any] = {"autoscaling": {"maxReplicas": 2, "scaleDown": {"stabilizationWindowSeconds": window}}}
    if spec_cold is not None:
        spec["coldStartSeconds"] = spec_cold
    objs = by_kind(render(deployment(spec), Platform.default(), ARTIFACT, measured_cold_start_seconds=measured))
    assert objs["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"] == expected


def test_a_negative_measurement_is_refused() -> None:
    with pytest.raises(ValueError, match="measured_cold_start_seconds"):
        render(deployment({}), Platform.default(), ARTIFACT, measured_cold_start_seconds=-1)


@pytest.mark.e2e
def test_render_defaults_the_cold_start_to_what_the_local_runtime_measured(tmp_path) -> None:
    """A real local platform serves iris; `mlplane render` then sizes the scale-down window from it."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
    from platform_helpers import mlplane, status

    from mlplane_pipelines.iris import train_and_register

    state_dir = tmp_path / ".mlplane"
    mlplane(state_dir, "up", "-f", str(REPO_ROOT / "examples" / "iris" / "platform.yaml"))
    try:
        train_and_register(status(state_dir)["trackingUri"], name="iris", alias="champion")
        mlplane(state_dir, "deploy", "-f", str(REPO_ROOT / "examples" / "iris" / "deployment.yaml"))
        measured = status(state_dir)["deployments"]["iris"]["coldStartSeconds"]
        assert measured > 0

        def window(cold_start: float | None) -> int:
            spec = {"model": "models:/iris@champion", "runtime": "kserve",
                    "autoscaling": {"maxReplicas": 2, "scaleDown": {"stabilizationWindowSeconds": 0}}}
            if cold_start is not None:
                spec["coldStartSeconds"] = cold_start
            path = tmp_path / "iris.yaml"
            path.write_text(yaml.safe_dump({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment",
                                            "metadata": {"name": "iris"}, "spec": spec}), encoding="utf-8")
            objs = by_kind(list(yaml.safe_load_all(mlplane(state_dir, "render", "-f", str(path)).stdout)))
            return objs["ScaledObject"]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][
                "scaleDown"]["stabilizationWindowSeconds"]

        assert window(None) == math.ceil(measured)
        assert window(900) == 900  # the spec's own value wins
    finally:
        mlplane(state_dir, "down", check=False)


def test_rag_gpu_actors_and_worker_groups_fit_the_serve_maximum() -> None:
    """Per-role actor options; every group can host its actors at their most replicas, GPU groups only the
    actors that need GPUs, and the GPU product reaches the Generator's pods."""
    ray = by_kind(rendered("rag-gpu"))["RayService"]
    (app,) = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"]
    options = {d["name"]: d["ray_actor_options"] for d in app["deployments"]}
    assert options["Embedder"] == {"num_cpus": 2.0}
    assert options["Generator"] == {"num_cpus": 4.0, "num_gpus": 1}
    assert options["Ingress"] == options["Retriever"] == {"num_cpus": 0.1}
    groups = {g["groupName"]: g for g in ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert sorted(groups) == ["generator-gpu", "workers"]
    gpu = groups["generator-gpu"]
    assert gpu["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4",
                                                       "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (1, 3)
    cpu = groups["workers"]
    assert cpu["rayStartParams"] == {"num-cpus": "2", "num-gpus": "0"}
    # Fewest: 2 + 0.1 + 0.1 CPUs in 2-CPU pods; most: 3 Embedder pods, and a pod each for the Ingress and
    # the Retriever (counted per kind, so it holds however Ray packs them).
    assert (cpu["minReplicas"], cpu["maxReplicas"]) == (2, 5)
    assert cpu["template"]["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}}
    capacity = {name: int(g["rayStartParams"]["num-cpus"]) * g["maxReplicas"] for name, g in groups.items()}
    most = {d["name"]: d.get("autoscaling_config", {}).get("max_replicas") or d["num_replicas"]
            for d in app["deployments"]}
    assert capacity["generator-gpu"] >= most["Generator"] * options["Generator"]["num_cpus"]
    assert capacity["workers"] >= sum(most[n] * options[n]["num_cpus"] for n in ("Embedder", "Ingress", "Retriever"))


def test_embedder_on_gpus_gets_its_own_group() -> None:
    dep = deployment({"runtime": "ray", "rag": {"embedder": {"resources": {"gpus": 1}}}})
    ray = render(dep, Platform.default(), ARTIFACT)[0]
    groups = {g["groupName"]: g for g in ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert sorted(groups) == ["embedder-gpu", "generator", "workers"]
    assert groups["embedder-gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "1"}
    assert "limits" not in groups["generator"]["template"]["spec"]["containers"][0]["resources"]


def test_single_gpu_replica_waits_for_a_gpu_and_keeps_its_last_pod() -> None:
    objs = by_kind(rendered("kserve-1gpu-single-replica"))
    predictor = objs["InferenceService"]["spec"]["predictor"]
    assert predictor["deploymentStrategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert objs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert "maxUnavailable" not in objs["PodDisruptionBudget"]["spec"]


def test_allow_outage_trades_availability_for_no_spare_gpu() -> None:
    dep = deployment({"replicas": 1, "resources": {"gpus": 1}, "rollout": {"allowOutage": True}})
    objs = by_kind(render(dep, Platform.default(), ARTIFACT, gpu_headroom=0))
    assert objs["InferenceService"]["spec"]["predictor"]["deploymentStrategy"]["rollingUpdate"] == {
        "maxSurge": 0, "maxUnavailable": 1}
    assert objs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(("spec", "budget"), [
    ({"replicas": 1}, {"minAvailable": 1}),
    ({"replicas": 3}, {"maxUnavailable": 1}),
    ({"autoscaling": {"minReplicas": 1, "maxReplicas": 4}}, {"minAvailable": 1}),
    ({"autoscaling": {"minReplicas": 0, "maxReplicas": 4}}, {"maxUnavailable": 1}),
])
def test_pdb_never_evicts_the_last_ready_replica(spec: dict[str, Any], budget: dict[str, Any]) -> None:
    pdb = by_kind(render(deployment(spec), Platform.default(), ARTIFACT))["PodDisruptionBudget"]["spec"]
    assert {k: v for k, v in pdb.items() if k != "selector"} == budget
