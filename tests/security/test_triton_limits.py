"""One request cannot crash or exhaust a Triton deployment, and a version switch does not stall it
(issue 13, findings 4 and 5).

A real tritonserver (the nvidia-pytriton wheel's 2.51) runs with exactly the command line, environment and
model repository the local runtime gives a deployment (``TritonRuntime.prepare``/``process``), serving an
iris model saved in this test. Each request that crashed or exhausted it before is sent again:

* ``"shape": [9223372036854775807]`` (aborted it), ``[2147483648]`` (grew it by 16 GiB), JSON ``data``
  nested 100k deep (overflowed its stack), a 24 MB body: over HTTP they meet Triton's closed inference
  API (403 with a message); over gRPC Triton checks shape x datatype against the data before allocating
  (INVALID_ARGUMENT), and a request over ``serving.maxRequestBytes`` is refused with a message.

After each one the same process answers a good request and its memory (read from /proc) stays bounded.
The server runs under an address-space limit so that a regression cannot take the machine's memory.

Then a switch to version 2 under gRPC load plus HTTP health/metadata polling: 0 failures.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from mlplane.resolution import ResolvedModel, Signature
from mlplane.runtime.local.components import write_prepared
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import TRITON_HTTP_INFERENCE_CLOSED, Endpoint, process_environment
from mlplane.runtime.local.runtimes import ServingContext, runtime_for
from mlplane.runtime.local.triton_control import grpc_model_load
from mlplane.serving.signature import inputs_from_schema, outputs_from_schema
from mlplane.spec import ModelDeployment

pytestmark = pytest.mark.e2e

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MAX_REQUEST_BYTES = 1 << 20
ADDRESS_SPACE = 6 << 30  # tritonserver's own virtual size is ~1.5 GiB; the model's stub is a process of its own
GROWTH = 256 << 20  # how much an attack may grow the server (an unbounded one: 16 GiB)
KEY = "test-control-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save_iris(path: Path) -> Signature:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = FEATURES
    model = LogisticRegression(max_iter=300).fit(X, y)
    sig = infer_signature(X, model.predict(X))
    mlflow.sklearn.save_model(model, str(path), signature=sig, pip_requirements=["scikit-learn"])
    return Signature(inputs_from_schema(sig.inputs), outputs_from_schema(sig.outputs))


def _limit_address_space() -> None:
    os.setpgrp()
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    base = tmp_path_factory.mktemp("triton-limits")
    model_dir = base / "iris-model"
    sig = _save_iris(model_dir)
    paths = StatePaths(base / ".mlplane")
    paths.root.mkdir()
    ctx = ServingContext(paths, (base / "mlruns").as_uri(), MAX_REQUEST_BYTES, 5, control_key=KEY)
    dep = ModelDeployment.model_validate({"metadata": {"name": "iris"},
                                          "spec": {"model": str(model_dir), "runtime": "triton"}})
    runtime = runtime_for("triton")
    v1 = ResolvedModel(str(model_dir), "1", signature=sig)
    write_prepared(runtime.prepare(ctx, dep, v1))
    endpoint = Endpoint("127.0.0.1", _free_port(), _free_port(), _free_port())
    spec = runtime.process(ctx, "iris", v1, endpoint)
    log_file = spec.log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(list(spec.argv), env=process_environment(spec), stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_limit_address_space)
    try:
        deadline = time.monotonic() + 540  # a busy 2-core machine loads the model slowly
        while True:
            try:
                if httpx.get(spec.ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.5)
        yield {"proc": proc, "endpoint": endpoint, "ctx": ctx, "dep": dep, "runtime": runtime,
               "v2": ResolvedModel(str(model_dir), "2", signature=sig), "log": log_file,
               "baseline": _tree_rss(proc.pid)}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _grpc_infer(endpoint: Endpoint, rows: int = 1, timeout: float = 30) -> tuple[list[int], str]:
    client = grpcclient.InferenceServerClient(endpoint.grpc)
    inputs = []
    for name in FEATURES:
        inp = grpcclient.InferInput(name, [rows], "FP64")
        inp.set_data_from_numpy(np.full(rows, 1.0))
        inputs.append(inp)
    result = client.infer("iris", inputs, client_timeout=timeout)
    return result.as_numpy("output-0").ravel().tolist(), result.get_response().model_version


def _still_serving(triton) -> None:
    """The same process, ready, answering a good request, its memory bounded."""
    proc, endpoint = triton["proc"], triton["endpoint"]
    assert proc.poll() is None, triton["log"].read_text()[-3000:]
    assert httpx.get(f"{endpoint.url}/v2/models/iris/ready", timeout=10).status_code == 200
    classes, _ = _grpc_infer(endpoint)
    assert len(classes) == 1 and classes[0] in (0, 1, 2)
    assert _tree_rss(proc.pid) < triton["baseline"] + GROWTH


def _json_input(shape: list[int], data: bytes = b"[1.0]") -> bytes:
    return (b'{"inputs": [{"name": "sepal_length", "datatype": "FP64", "shape": ' + json.dumps(shape).encode()
            + b', "data": ' + data + b"}]}")


CRASHERS = {
    "shape 2**63-1": _json_input([9223372036854775807]),
    "shape 2**31": _json_input([2147483648]),
    "data nested 100k deep": _json_input([1], b"[" * 100_000 + b"1" + b"]" * 100_000),
    "a 24 MB body": _json_input([3_000_000], json.dumps([1.0] * 3_000_000).encode()),
}


@pytest.mark.parametrize("body", list(CRASHERS.values()), ids=list(CRASHERS))
def test_http_inference_is_closed_so_the_requests_that_crashed_triton_are_refused(triton, body):
    r = httpx.post(f"{triton['endpoint'].url}/v2/models/iris/infer", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 403, r.text
    assert TRITON_HTTP_INFERENCE_CLOSED in r.json()["error"]  # "…inference-is-served-over-grpc-only"
    _still_serving(triton)


def test_http_health_metadata_and_statistics_stay_open(triton):
    url = triton["endpoint"].url
    meta = httpx.get(f"{url}/v2/models/iris").json()
    assert [i["name"] for i in meta["inputs"]] == FEATURES and meta["versions"] == ["1"]
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/models/iris/stats").status_code == 200
    assert "nv_inference_request_success" in httpx.get(triton["endpoint"].metrics).text


def _raw_request(shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    for name in FEATURES:
        request.inputs.add(name=name, datatype="FP64", shape=shape)
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize("shape", [[9223372036854775807], [2147483648], [-5]], ids=["2**63-1", "2**31", "negative"])
def test_grpc_checks_shape_against_the_data_before_allocating(triton, shape):
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(triton["endpoint"].grpc))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(_raw_request(shape, np.ones(1).tobytes()), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "byte size mismatch" in refused.value.details()
    _still_serving(triton)


def test_grpc_request_over_max_request_bytes_is_refused_with_a_message(triton):
    rows = 2 * MAX_REQUEST_BYTES // 8 // len(FEATURES) + 1  # twice the limit in all
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(triton["endpoint"].grpc))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(_raw_request([rows], np.ones(rows).tobytes()), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"over serving.maxRequestBytes ({MAX_REQUEST_BYTES} bytes)" in refused.value.details()
    _still_serving(triton)
    # Just under the limit is served.
    classes, _ = _grpc_infer(triton["endpoint"], rows=MAX_REQUEST_BYTES // 8 // len(FEATURES))
    assert set(classes) <= {0, 1, 2}


def test_a_version_switch_under_load_fails_no_request(triton):
    """The supervisor's switch (gRPC RepositoryModelLoad, see runtime.local.triton_control) while clients
    infer over gRPC and poll HTTP health and metadata, each with a 10 s timeout."""
    endpoint = triton["endpoint"]
    results: dict = {"versions": [], "errors": [], "http": 0}
    stop = threading.Event()

    def infer() -> None:
        while not stop.is_set():
            try:
                results["versions"].append(_grpc_infer(endpoint, timeout=10)[1])
            except Exception as exc:  # every failure counts
                results["errors"].append(f"grpc: {exc!r}")

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    for path in ("/v2/models/iris/ready", "/v2/models/iris"):
                        client.get(endpoint.url + path).raise_for_status()
                    results["http"] += 1
                except Exception as exc:
                    results["errors"].append(f"http: {exc!r}")

    threads = [threading.Thread(target=infer) for _ in range(3)] + [threading.Thread(target=poll)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        runtime, ctx = triton["runtime"], triton["ctx"]
        write_prepared(runtime.prepare(ctx, triton["dep"], triton["v2"]))
        load = runtime.load_request("iris", triton["v2"], ctx)
        answer = asyncio.run(grpc_model_load(endpoint.grpc, "iris", load.grpc_metadata, timeout=600))
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert answer.status_code == 200, answer.text
    assert results["errors"] == []
    assert results["versions"][0] == "1" and results["versions"][-1] == "2" and results["http"] > 5
    assert httpx.get(f"{endpoint.url}/v2/models/iris").json()["versions"] == ["2"]

    def version_1_unloaded() -> bool:  # Triton stops version 1's stub after the switch, in the background
        index = httpx.post(f"{endpoint.url}/v2/repository/index", json={}, timeout=10,
                           headers={"mlplane-control-key": KEY}).json()
        return {m["version"]: m["state"] for m in index} == {"1": "UNAVAILABLE", "2": "READY"}

    deadline = time.monotonic() + 300
    while not version_1_unloaded():
        assert time.monotonic() < deadline, "version 1 was never unloaded"
        time.sleep(1.0)
    _still_serving(triton)


def test_a_switch_without_the_control_key_is_refused_with_a_message(triton):
    answer = asyncio.run(grpc_model_load(triton["endpoint"].grpc, "iris", {}, timeout=60))
    assert answer.status_code == 400 and "restricted" in answer.json()["error"]
    _still_serving(triton)
