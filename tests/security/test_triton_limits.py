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
import threading
import time

import httpx
import pytest
from triton_attacks import (
    BAD_SHAPES,
    CRASHERS,
    MODEL,
    free_port,
    grpc_bad_shape_is_refused,
    grpc_infer,
    grpc_over_max_request_bytes_is_refused,
    http_health_metadata_and_statistics_are_open,
    http_inference_is_refused,
    running,
    save_iris,
)

from mlplane.resolution import ResolvedModel
from mlplane.runtime.local.components import write_prepared
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import Endpoint, process_environment
from mlplane.runtime.local.runtimes import ServingContext, runtime_for
from mlplane.runtime.local.triton_control import grpc_model_load
from mlplane.spec import ModelDeployment
from mlplane.spec.platform import Platform

pytestmark = pytest.mark.e2e

MAX_REQUEST_BYTES = 1 << 20
KEY = "test-control-key"


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    base = tmp_path_factory.mktemp("triton-limits")
    model_dir = base / "iris-model"
    sig = save_iris(model_dir)
    paths = StatePaths(base / ".mlplane")
    paths.root.mkdir()
    serving = {"maxRequestBytes": MAX_REQUEST_BYTES, "gracePeriodSeconds": 5}
    platform = Platform.model_validate({"metadata": {"name": "local"}, "spec": {"serving": serving}})
    ctx = ServingContext(paths, (base / "mlruns").as_uri(), platform, control_key=KEY)
    dep = ModelDeployment.model_validate({"metadata": {"name": MODEL},
                                          "spec": {"model": str(model_dir), "runtime": "triton"}})
    runtime = runtime_for("triton")
    v1 = ResolvedModel(str(model_dir), "1", signature=sig)
    write_prepared(runtime.prepare(ctx, dep, v1))
    endpoint = Endpoint("127.0.0.1", free_port(), free_port(), free_port())
    spec = runtime.process(ctx, MODEL, v1, endpoint)
    with running(spec.argv, process_environment(spec), spec.log, http_url=endpoint.url, grpc_address=endpoint.grpc,
                 metrics_url=endpoint.metrics) as server:
        yield {"server": server, "endpoint": endpoint, "ctx": ctx, "dep": dep, "runtime": runtime,
               "v2": ResolvedModel(str(model_dir), "2", signature=sig)}


@pytest.mark.parametrize("body", list(CRASHERS.values()), ids=list(CRASHERS))
def test_http_inference_is_closed_so_the_requests_that_crashed_triton_are_refused(triton, body):
    http_inference_is_refused(triton["server"], body)


def test_http_health_metadata_and_statistics_stay_open(triton):
    http_health_metadata_and_statistics_are_open(triton["server"], ["1"])


@pytest.mark.parametrize("shape", list(BAD_SHAPES.values()), ids=list(BAD_SHAPES))
def test_grpc_checks_shape_against_the_data_before_allocating(triton, shape):
    grpc_bad_shape_is_refused(triton["server"], shape)


def test_grpc_request_over_max_request_bytes_is_refused_with_a_message(triton):
    grpc_over_max_request_bytes_is_refused(triton["server"], MAX_REQUEST_BYTES)


def test_a_version_switch_under_load_fails_no_request(triton):
    """The supervisor's switch (gRPC RepositoryModelLoad, see runtime.local.triton_control) while clients
    infer over gRPC and poll HTTP health and metadata, each with a 10 s timeout."""
    endpoint = triton["endpoint"]
    results: dict = {"versions": [], "errors": [], "http": 0}
    stop = threading.Event()

    def infer() -> None:
        while not stop.is_set():
            try:
                results["versions"].append(grpc_infer(endpoint.grpc, timeout=10)[1])
            except Exception as exc:  # every failure counts
                results["errors"].append(f"grpc: {exc!r}")

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    for path in (f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}"):
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
        load = runtime.load_request(MODEL, triton["v2"], ctx)
        answer = asyncio.run(grpc_model_load(endpoint.grpc, MODEL, load.grpc_metadata, timeout=600))
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert answer.status_code == 200, answer.text
    assert results["errors"] == []
    assert results["versions"][0] == "1" and results["versions"][-1] == "2" and results["http"] > 5
    assert httpx.get(f"{endpoint.url}/v2/models/{MODEL}").json()["versions"] == ["2"]

    def version_1_unloaded() -> bool:  # Triton stops version 1's stub after the switch, in the background
        index = httpx.post(f"{endpoint.url}/v2/repository/index", json={}, timeout=10,
                           headers={"mlplane-control-key": KEY}).json()
        return {m["version"]: m["state"] for m in index} == {"1": "UNAVAILABLE", "2": "READY"}

    deadline = time.monotonic() + 300
    while not version_1_unloaded():
        assert time.monotonic() < deadline, "version 1 was never unloaded"
        time.sleep(1.0)
    triton["server"].still_serving()


def test_a_switch_without_the_control_key_is_refused_with_a_message(triton):
    answer = asyncio.run(grpc_model_load(triton["endpoint"].grpc, MODEL, {}, timeout=60))
    assert answer.status_code == 400 and "restricted" in answer.json()["error"]
    triton["server"].still_serving()
