"""What the local runtime tells tritonserver about limits and version switches, without starting one
(the real server gets the same requests in test_triton_limits.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from mlplane.resolution import ResolvedModel
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import (
    TRITON_HTTP_INFERENCE_CLOSED,
    Endpoint,
    TritonInstall,
    triton_http_inference_header,
    triton_process,
)
from mlplane.runtime.local.runtimes import ServingContext, UnsupportedRuntime, runtime_for
from mlplane.runtime.local.triton_control import model_load_request
from mlplane.serving.triton_backend import RequestTooLarge, check_request_bytes
from mlplane.spec.loader import load_dict
from mlplane.spec.platform import Platform

INSTALL = TritonInstall(Path("/t/bin/tritonserver"), Path("/t/backends/python"), Path("/t/stub"), (), ())


def _argv(tmp_path: Path, grpc_port: int | None) -> list[str]:
    spec = triton_process(StatePaths(tmp_path), "iris", Endpoint("127.0.0.1", 1, grpc_port), "http://x", 5,
                          INSTALL, "k3y", max_request_bytes=4096)
    assert spec.env["MLPLANE_MAX_REQUEST_BYTES"] == "4096"
    return list(spec.argv)


def test_with_grpc_clients_infer_over_grpc_only(tmp_path):
    prefix = f"--http-restricted-api=inference:{TRITON_HTTP_INFERENCE_CLOSED}="
    closed = [a for a in _argv(tmp_path, 2) if a.startswith(prefix)]
    value = closed[0].rsplit("=", 1)[1]
    assert len(closed) == 1 and len(value) >= 32 and "k3y" not in value  # a value no client holds
    # Model control is still the supervisor's, on both protocols.
    assert "--http-restricted-api=model-repository,logging,trace:mlplane-control-key=k3y" in _argv(tmp_path, 2)


def test_a_platform_without_grpc_cannot_serve_triton(tmp_path):
    """Without gRPC, Triton's HTTP inference API would be the only way in, and one request crashes it
    (docs/triton-limits.md): the runtime refuses, and the server's HTTP inference stays closed anyway."""
    dep = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
                     "spec": {"model": "models:/iris/1", "runtime": "triton"}}, source="x")
    serving = {"maxRequestBytes": 1024, "gracePeriodSeconds": 5, "grpc": False}
    platform = Platform.model_validate({"metadata": {"name": "local"}, "spec": {"serving": serving}})
    ctx = ServingContext(StatePaths(tmp_path), "http://x", platform)
    with pytest.raises(UnsupportedRuntime, match=r"spec.serving.grpc is false.*spec.serving.grpc: true"):
        runtime_for("triton").prepare(ctx, dep, ResolvedModel("models:/iris/1", "1"), None)
    argv = _argv(tmp_path, None)
    assert "--allow-grpc=false" in argv
    closed = f"--http-restricted-api=inference:{TRITON_HTTP_INFERENCE_CLOSED}="
    assert len([a for a in argv if a.startswith(closed)]) == 1


def test_the_open_header_is_derived_from_the_control_key(tmp_path):
    ((name, value),) = triton_http_inference_header("k3y").items()
    assert f"--http-restricted-api=inference:{name}={value}" in _argv(tmp_path, 2)
    assert triton_http_inference_header("other") != {name: value}


def test_triton_switches_versions_over_grpc_with_the_key_as_restricted_protocol_metadata(tmp_path):
    platform = Platform.model_validate({"metadata": {"name": "local"},
                                       "spec": {"serving": {"maxRequestBytes": 1024, "gracePeriodSeconds": 5}}})
    ctx = ServingContext(StatePaths(tmp_path), "http://x", platform, control_key="s3cret-key")
    load = runtime_for("triton").load_request("iris", ResolvedModel("models:/iris/2", "2"), ctx)
    assert load.grpc_metadata == {"triton-grpc-protocol-mlplane-control-key": "s3cret-key"}
    assert "s3cret-key" not in repr(load)
    kserve = runtime_for("kserve").load_request("iris", ResolvedModel("models:/iris/2", "2"), ctx)
    assert kserve.grpc_metadata is None  # kserve switches on its control socket


@pytest.mark.parametrize("name", ["iris", "x" * 200, "modèle-ü" * 20])
def test_the_hand_encoded_load_request_is_what_tritons_protobuf_reads(name):
    request = pb.RepositoryModelLoadRequest.FromString(model_load_request(name))
    assert request.model_name == name and request.repository_name == "" and not request.parameters


def test_the_backend_refuses_tensors_over_max_request_bytes_and_names_the_limit():
    inputs = [np.ones(64), np.ones(64)]  # two FP64 tensors, 1024 bytes
    check_request_bytes(inputs, 1024)
    check_request_bytes(inputs, 0)  # no limit
    with pytest.raises(RequestTooLarge, match=r"1024 bytes, over serving.maxRequestBytes \(1023 bytes\)"):
        check_request_bytes(inputs, 1023)
