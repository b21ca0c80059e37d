"""The chart's ClusterServingRuntime `mlplane-triton`: the protected entrypoint, gRPC as the served port,
probes on Triton's unrestricted HTTP health API, and the render's InferenceService that fits it.
tests/security/test_triton_cluster_limits.py runs this very container command against a real tritonserver."""

from __future__ import annotations

import pytest
from triton_cluster import ARTIFACT, predictor_container, triton_isvc, triton_runtime

from mlplane.k8s import render as render_deployment
from mlplane.spec import ModelDeployment, Platform, SpecError, load_dict
from mlplane.triton.server import refused_args


def test_triton_runs_behind_mlplanes_entrypoint_with_model_control_off() -> None:
    container = triton_runtime()["containers"][0]
    assert container["command"] == ["python", "-m", "mlplane.triton.server"]
    args = container["args"]
    assert "--model-store=/mnt/models" in args and "--model-control-mode=none" in args
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    # The entrypoint owns the restricted-API flags; the chart sets none of them.
    assert not [a for a in args if "restricted" in a]
    assert refused_args(args) is None


def test_clients_are_served_grpc_and_the_probes_use_http_health() -> None:
    runtime = triton_runtime()
    assert runtime["protocolVersions"] == ["grpc-v2"]
    container = runtime["containers"][0]
    ports = container["ports"]
    # KServe 0.20 RawDeployment (service_reconciler.go createDefaultSvc): Service port 80 -> the first
    # container port, appProtocol kubernetes.io/h2c because its name contains "grpc"; the rest keep their numbers.
    assert ports[0] == {"name": "grpc", "containerPort": 8001, "protocol": "TCP"}
    assert {p["name"]: p["containerPort"] for p in ports[1:]} == {"http1": 8000, "metrics": 8002}
    # KServe's default readiness probe (TCP on the first port) would pass before the models load.
    http_port = ports[1]["containerPort"]
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live"),
                        ("startupProbe", "/v2/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": http_port}, probe
    assert runtime["annotations"]["prometheus.kserve.io/port"] == "8002"


def test_the_rendered_inference_service_speaks_the_runtimes_protocol_and_carries_the_limits() -> None:
    runtime, isvc = triton_runtime(), triton_isvc(max_request_bytes=4096, grace_period_s=12)
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "mlplane-triton" and model["protocolVersion"] in runtime["protocolVersions"]
    container = predictor_container(runtime, isvc)
    assert {"name": "MLPLANE_MAX_REQUEST_BYTES", "value": "4096"} in container["env"]
    assert container["args"][-1] == "--exit-timeout-secs=12"
    assert refused_args(container["args"]) is None  # what KServe starts, the entrypoint accepts


CANARY = {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
          "spec": {"model": "models:/iris/1", "rollout": {"canaryTrafficPercent": 10}}}


def test_a_triton_canary_is_refused_with_a_message() -> None:
    """A canary needs KServe's Knative mode: one port per pod, which cannot carry Triton's protected layout."""
    with pytest.raises(SpecError, match="runtime triton serves clients on gRPC.*remove the canary"):
        load_dict({**CANARY, "spec": {**CANARY["spec"], "runtime": "triton"}}, source="x")


def test_a_canary_on_a_platform_defaulting_to_triton_is_refused_by_the_render() -> None:
    platform = Platform.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                        "metadata": {"name": "default"},
                                        "spec": {"serving": {"defaultRuntime": "triton"}}})
    with pytest.raises(ValueError, match="runtime triton serves clients on gRPC.*use runtime kserve"):
        render_deployment(ModelDeployment.model_validate(CANARY), platform, ARTIFACT)
