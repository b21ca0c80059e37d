"""The kserve runtime's request validation (issue 13, findings 4, 9 and 10), against a real model server.

Each request of the issue gets its answer here: NaN/Infinity/null/out-of-range numbers are a 400 that names
the input and the keep-alive connection stays usable; negative dimensions, ``shape: [true]`` and a
lower-case datatype are 400s; a Content-Type that is neither JSON nor the binary extension's is a 415; a
shape whose byte size exceeds ``--max-request-bytes`` is a 413 / RESOURCE_EXHAUSTED before anything is
allocated (the server's memory does not move); JSON nested deeper than orjson's limit is a 413; gRPC
``model_version: "999"`` is NOT_FOUND instead of being answered by version 1.
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from serving_helpers import IRIS_COLUMNS, ServerProcess, save_iris_model, start_server

pytestmark = pytest.mark.e2e

NAME = "iris"
MAX_BYTES = 256 * 1024
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("validation")
    model = save_iris_model(root / "model", C=1.0)
    srv = start_server(NAME, str(model), root / "server.log", version="1",
                       extra_args=["--max-request-bytes", str(MAX_BYTES)])
    try:
        srv.wait_ready(NAME)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def conn(server: ServerProcess):
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    yield c
    c.close()


def body(value: str = "5.0", *, datatype: str = "FP64", shape: str = "[1]", first_only: bool = True) -> bytes:
    """A request whose first input (``sepal_length``) carries ``value`` verbatim as JSON text."""
    parts = []
    for i, name in enumerate(IRIS_COLUMNS):
        v = value if (i == 0 or not first_only) else str(ROW[i])
        dt = datatype if (i == 0 or not first_only) else "FP64"
        sh = shape if (i == 0 or not first_only) else "[1]"
        parts.append(f'{{"name": "{name}", "shape": {sh}, "datatype": "{dt}", "data": [{v}]}}')
    return ('{"inputs": [' + ", ".join(parts) + "]}").encode()


def post(conn: http.client.HTTPConnection, payload: bytes, content_type: str | None = "application/json",
         path: str = f"/v2/models/{NAME}/infer") -> tuple[int, dict]:
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", path, body=payload, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def assert_still_serves(conn: http.client.HTTPConnection) -> None:
    """The same keep-alive connection answers a good request (no ECONNRESET)."""
    status, answer = post(conn, body())
    assert status == 200 and answer["model_version"] == "1", answer


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "null", "1e400", "-1e999"])
def test_non_finite_and_out_of_range_numbers_are_400_naming_the_input(conn, value):
    for _ in range(3):  # the issue saw the connection dropped after the first such request
        status, answer = post(conn, body(value))
        assert status == 400, answer
        assert "sepal_length" in answer["error"], answer
        assert_still_serves(conn)


@pytest.mark.parametrize(("value", "words"), [('"5.1"', ["sepal_length", "FP64", "strings"]),
                                              ("true", ["sepal_length", "FP64", "booleans"]),
                                              ("[1, 2]", ["sepal_length", "regular array"])])
def test_values_that_are_not_numbers_are_400(conn, value, words):
    status, answer = post(conn, body(value + ", 1.0" if value.startswith("[") else value))
    assert status == 400, answer
    for word in words:
        assert word in answer["error"], answer
    assert_still_serves(conn)


def test_model_refusing_nan_in_binary_data_is_400_naming_the_inputs(server: ServerProcess, conn):
    """Binary and gRPC tensors can carry IEEE NaN; a model that refuses it gets the client a 400, not a 500."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.http_port}")
    inputs = []
    for i, name in enumerate(IRIS_COLUMNS):
        inp = httpclient.InferInput(name, [1], "FP64")
        inp.set_data_from_numpy(np.array([np.nan if i == 2 else ROW[i]]), binary_data=True)
        inputs.append(inp)
    with pytest.raises(InferenceServerException) as err:
        client.infer(NAME, inputs)
    assert err.value.status() == "400" and "petal_length" in err.value.message()
    assert_still_serves(conn)


def test_an_empty_batch_the_model_refuses_is_400(conn):
    status, answer = post(conn, body("", shape="[0]", first_only=False))
    assert status == 400 and "empty batch" in answer["error"] and "sepal_length" in answer["error"], answer
    assert_still_serves(conn)


@pytest.mark.parametrize(("datatype", "shape", "words"), [
    ("FP64", "[-1]", ["sepal_length", "non-negative", "[-1]"]),
    ("FP64", "[true]", ["sepal_length", "non-negative", "[True]"]),
    ("FP64", "[1.0]", ["sepal_length", "non-negative"]),
    ("FP64", '["1"]', ["sepal_length", "non-negative"]),
    ("fp64", "[1]", ["sepal_length", "'fp64'", "case-sensitive", "'FP64'"]),
    ("Fp64", "[1]", ["sepal_length", "'Fp64'"]),
    ("FLOAT64", "[1]", ["sepal_length", "unknown datatype"]),
    ("FP64", "[18446744073709551616]", ["sepal_length", "non-negative"]),  # past 2**64: not an integer to JSON
])
def test_shapes_and_datatypes_as_the_protocol_spells_them(conn, datatype, shape, words):
    status, answer = post(conn, body(datatype=datatype, shape=shape))
    assert status == 400, answer
    for word in words:
        assert word in answer["error"], answer
    assert_still_serves(conn)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(conn, content_type):
    status, answer = post(conn, body(), content_type=content_type)
    assert status == 415 and "Content-Type" in answer["error"] and "application/json" in answer["error"], answer
    assert_still_serves(conn)


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8",
                                          "application/octet-stream"])
def test_json_and_binary_content_types_are_served(conn, content_type):
    status, answer = post(conn, body(), content_type=content_type)
    assert status == 200 and answer["outputs"][0]["name"] == "output-0", answer
    assert "parameters" not in answer and "parameters" not in answer["outputs"][0]


@pytest.mark.parametrize("dim", ["9223372036854775807", "2147483648", "4294967296"])
def test_shape_beyond_max_request_bytes_is_413_before_allocation(server: ServerProcess, conn, dim):
    proc = psutil.Process(server.proc.pid)
    before = proc.memory_info().rss
    status, answer = post(conn, body(shape=f"[{dim}]"))
    assert status == 413, answer
    assert "sepal_length" in answer["error"] and str(MAX_BYTES) in answer["error"], answer
    assert proc.memory_info().rss - before < 64 * 2**20  # nothing shape-sized was allocated
    assert_still_serves(conn)


def test_inputs_together_over_the_limit_are_413(conn):
    n = MAX_BYTES // 8 // 2 + 1  # each input alone fits, the four together do not
    status, answer = post(conn, body("0", shape=f"[{n}]", first_only=False))
    assert status == 413 and "other inputs" in answer["error"], answer
    assert_still_serves(conn)


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_deep_json_nesting_is_413(conn, depth):
    deep = b'{"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": ' + \
        b"[" * depth + b"]" * depth + b"}]}"
    status, answer = post(conn, deep)
    assert status == 413 and "nested" in answer["error"], answer
    assert_still_serves(conn)


def _grpc_request(version: str = "", shape: tuple[int, ...] = (1,), datatype: str = "FP64",
                  outputs: tuple[str, ...] = ()) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=NAME, model_version=version)
    for i, name in enumerate(IRIS_COLUMNS):
        request.inputs.add(name=name, datatype=datatype, shape=list(shape)).contents.fp64_contents.append(ROW[i])
    for o in outputs:
        request.outputs.add(name=o)
    return request


@pytest.fixture(scope="module")
def stub(server: ServerProcess):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize(("request_kwargs", "code", "words"), [
    ({"version": "999"}, grpc.StatusCode.NOT_FOUND, ["'999'", "version 1"]),
    ({"shape": (-1,)}, grpc.StatusCode.INVALID_ARGUMENT, ["sepal_length", "non-negative"]),
    ({"datatype": "fp64"}, grpc.StatusCode.INVALID_ARGUMENT, ["'fp64'", "case-sensitive"]),
    ({"shape": (9223372036854775807,)}, grpc.StatusCode.RESOURCE_EXHAUSTED, ["sepal_length", str(MAX_BYTES)]),
    ({"shape": (2147483648,)}, grpc.StatusCode.RESOURCE_EXHAUSTED, ["sepal_length", str(MAX_BYTES)]),
    ({"outputs": ("no-such-output",)}, grpc.StatusCode.INVALID_ARGUMENT, ["no-such-output"]),
])
def test_grpc_refusals(stub, request_kwargs, code, words):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_grpc_request(**request_kwargs))
    assert err.value.code() == code, err.value
    for word in words:
        assert word in err.value.details(), err.value.details()
    assert stub.ModelInfer(_grpc_request(version="1")).model_version == "1"


def test_grpc_version_checked_on_metadata_and_readiness(stub):
    for call, request in ((stub.ModelMetadata, pb.ModelMetadataRequest(name=NAME, version="999")),
                          (stub.ModelReady, pb.ModelReadyRequest(name=NAME, version="999"))):
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.ModelReady(pb.ModelReadyRequest(name=NAME, version="1")).ready


def test_server_kept_its_pid(server: ServerProcess):
    """Everything above ran against one process: nothing crashed or restarted it."""
    assert server.proc.poll() is None
