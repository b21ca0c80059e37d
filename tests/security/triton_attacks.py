"""The requests that crashed or exhausted tritonserver 2.51, and how to check a server survived them.

Shared by test_triton_limits.py (the local runtime's command line) and test_triton_cluster_limits.py (the
chart's, through `python -m mlplane.triton.server`): both start a real tritonserver (the
nvidia-pytriton wheel's) serving an iris model and send each attack with the helpers here.
tests/images/test_triton_image.py runs the chart's command inside the mlplane-triton image on the same
cluster repository (`cluster_model_repository`).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from mlplane.core.signature import inputs_from_schema, outputs_from_schema
from mlplane.resolution import Signature
from mlplane.spec import ModelDeployment
from mlplane.triton.args import TRITON_HTTP_INFERENCE_CLOSED
from mlplane.triton.repository import cluster_repository

MODEL = "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ADDRESS_SPACE = 6 << 30  # tritonserver's own virtual size is ~1.5 GiB; the model's stub is a process of its own
GROWTH = 256 << 20  # how much an attack may grow the server (an unbounded one: 16 GiB)
READY_TIMEOUT_S = 540  # a busy 2-core machine loads the model slowly


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_iris(path: Path) -> Signature:
    """An MLflow iris model with a signature, saved at `path`."""
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


def cluster_model_repository(root: Path) -> Path:
    """What KServe's storage initializer puts in /mnt/models for a `runtime: triton` deployment: the generated
    cluster repository (`cluster_repository`) with the MLflow iris model inside it, at `root`/models.
    Readable by anyone, as the storage initializer leaves it for the model server's UID."""
    model_dir = root / "iris-model"
    sig = save_iris(model_dir)
    dep = ModelDeployment.model_validate({"metadata": {"name": MODEL},
                                          "spec": {"model": "models:/iris/1", "runtime": "triton"}})
    repo = cluster_repository(MODEL, "1", sig.inputs, sig.outputs, dep.spec)
    models = root / "models"
    for path, text in repo.files.items():
        (models / path).parent.mkdir(parents=True, exist_ok=True)
        (models / path).write_text(text, encoding="utf-8")
    shutil.copytree(model_dir, models / repo.model_dir)
    for p in [models, *models.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return models


def _limit_address_space() -> None:
    os.setpgrp()
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


@dataclass
class Server:
    """A running tritonserver: its process (group), addresses, log and resident memory once ready."""

    proc: subprocess.Popen
    http_url: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    metrics_url: str
    log: Path
    baseline: int = 0
    growth: int = GROWTH  # how far above baseline still_serving lets its memory be

    def still_serving(self) -> None:
        """The same process, ready, answering a good gRPC request, its memory bounded."""
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        assert httpx.get(f"{self.http_url}/v2/models/{MODEL}/ready", timeout=10).status_code == 200
        classes, _ = grpc_infer(self.grpc)
        assert len(classes) == 1 and classes[0] in (0, 1, 2)
        rss = tree_rss(self.proc.pid)
        assert rss < self.baseline + self.growth, f"grew {(rss - self.baseline) >> 20} MiB over its baseline"


def wait_until_ready(proc: subprocess.Popen, url: str, log: Path, what: str = "tritonserver") -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if ``proc`` exits or READY_TIMEOUT_S passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (
            f"{what} never became ready (exit {proc.poll()}):\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)


@contextmanager
def running(argv: Sequence[str], env: Mapping[str, str], log: Path, *, http_url: str, grpc_address: str,
            metrics_url: str) -> Iterator[Server]:
    """Start `argv` under an address-space limit (a regression cannot take the machine's memory), wait until
    the model is ready, yield the server, then stop its process group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_limit_address_space)
    server = Server(proc, http_url, grpc_address, metrics_url, log)
    try:
        wait_until_ready(proc, f"{http_url}/v2/models/{MODEL}/ready", log)
        server.baseline = tree_rss(proc.pid)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def grpc_infer(address: str, rows: int = 1, timeout: float = 30) -> tuple[list[int], str]:
    """A good request over gRPC: (the classes, the model version that answered)."""
    client = grpcclient.InferenceServerClient(address)
    inputs = []
    for name in FEATURES:
        inp = grpcclient.InferInput(name, [rows], "FP64")
        inp.set_data_from_numpy(np.full(rows, 1.0))
        inputs.append(inp)
    result = client.infer(MODEL, inputs, client_timeout=timeout)
    return result.as_numpy("output-0").ravel().tolist(), result.get_response().model_version


def _json_input(shape: list[int], data: bytes = b"[1.0]") -> bytes:
    return (b'{"inputs": [{"name": "sepal_length", "datatype": "FP64", "shape": ' + json.dumps(shape).encode()
            + b', "data": ' + data + b"}]}")


#: HTTP/JSON requests that crashed (or grew without bound) tritonserver 2.51's HTTP front end.
CRASHERS = {
    "shape 2**63-1": _json_input([9223372036854775807]),
    "shape 2**31": _json_input([2147483648]),
    "data nested 100k deep": _json_input([1], b"[" * 100_000 + b"1" + b"]" * 100_000),
    "a 24 MB body": _json_input([3_000_000], json.dumps([1.0] * 3_000_000).encode()),
}
#: gRPC shapes that do not match the data sent.
BAD_SHAPES = {"2**63-1": [9223372036854775807], "2**31": [2147483648], "negative": [-5]}


def raw_request(shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name in FEATURES:
        request.inputs.add(name=name, datatype="FP64", shape=shape)
        request.raw_input_contents.append(raw)
    return request


def _stub(address: str) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))


def http_inference_is_refused(server: Server, body: bytes) -> None:
    """HTTP inference meets the closed API: 403, naming the header (the message), and the server lives."""
    r = httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", content=body,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 403, r.text
    assert TRITON_HTTP_INFERENCE_CLOSED in r.json()["error"]  # "…inference-is-served-over-grpc-only"
    server.still_serving()


def http_health_metadata_and_statistics_are_open(server: Server, versions: list[str]) -> None:
    meta = httpx.get(f"{server.http_url}/v2/models/{MODEL}").json()
    assert [i["name"] for i in meta["inputs"]] == FEATURES and meta["versions"] == versions
    assert httpx.get(f"{server.http_url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.http_url}/v2/models/{MODEL}/stats").status_code == 200
    assert "nv_inference_request_success" in httpx.get(server.metrics_url).text


def grpc_bad_shape_is_refused(server: Server, shape: list[int]) -> None:
    """Triton checks shape x datatype against the bytes sent before it allocates."""
    with pytest.raises(grpc.RpcError) as refused:
        _stub(server.grpc).ModelInfer(raw_request(shape, np.ones(1).tobytes()), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "byte size mismatch" in refused.value.details()
    server.still_serving()


def grpc_over_max_request_bytes_is_refused(server: Server, max_request_bytes: int) -> None:
    """Twice the limit is refused with a message naming it; just under it is served."""
    rows = 2 * max_request_bytes // 8 // len(FEATURES) + 1
    with pytest.raises(grpc.RpcError) as refused:
        _stub(server.grpc).ModelInfer(raw_request([rows], np.ones(rows).tobytes()), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"over serving.maxRequestBytes ({max_request_bytes} bytes)" in refused.value.details()
    server.still_serving()
    classes, _ = grpc_infer(server.grpc, rows=max_request_bytes // 8 // len(FEATURES))
    assert set(classes) <= {0, 1, 2}
