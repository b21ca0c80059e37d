"""mlplane's model server as a real process: V2 over HTTP and gRPC, bad input, version swap, SIGTERM.

Version swaps go through the server's control socket (``--control-socket``), the way the supervisor
sends them; the public port refuses them (tests/security has the attacks).
"""

from __future__ import annotations

import signal
import stat
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_helpers import IRIS_COLUMNS, ServerProcess, iris_frame, save_iris_model, start_server
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

NAME = "iris"
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"1": save_iris_model(root / "v1", C=0.02), "2": save_iris_model(root / "v2", C=100.0)}


@pytest.fixture(scope="module")
def expected(models: dict[str, Path]) -> dict[str, np.ndarray]:
    import mlflow.pyfunc

    X, _ = iris_frame()
    return {v: np.asarray(mlflow.pyfunc.load_model(str(p)).predict(X)) for v, p in models.items()}


@pytest.fixture(scope="module")
def control_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("control") / "private" / f"{NAME}.sock"


@pytest.fixture(scope="module")
def server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, control_socket: Path):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    srv = start_server(
        NAME, str(models["1"]), log, version="1",
        extra_args=["--max-request-bytes", str(MAX_BYTES), "--control-socket", str(control_socket)],
    )
    try:
        srv.wait_ready(NAME)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess):
    with httpx.Client(base_url=server.http_url, timeout=30.0) as client:
        yield client


def control_client(socket_path: Path, timeout: float = 60.0) -> httpx.Client:
    """What the supervisor uses: HTTP over the server's control socket."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://model-control",
                        timeout=timeout)


@pytest.fixture(scope="module")
def control(server: ServerProcess, control_socket: Path):
    with control_client(control_socket) as client:
        yield client


def v2_json(X, ids: str | None = None, datatype: str = "FP64") -> dict:
    body: dict = {
        "inputs": [
            {"name": c, "shape": [len(X)], "datatype": datatype, "data": X[c].tolist()} for c in IRIS_COLUMNS
        ]
    }
    if ids is not None:
        body["id"] = ids
    return body


def triton_inputs(module, X) -> list:
    inputs = []
    for c in IRIS_COLUMNS:
        inp = module.InferInput(c, [len(X)], "FP64")
        inp.set_data_from_numpy(X[c].to_numpy())
        inputs.append(inp)
    return inputs


def _connections(proc: psutil.Process) -> list:
    getter = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 has only the old name
    return getter(kind="inet")


# -- protocol ------------------------------------------------------------------------------------
def test_binds_only_loopback(server: ServerProcess) -> None:
    listening = [c.laddr for c in _connections(psutil.Process(server.proc.pid)) if c.status == "LISTEN"]
    ports = {addr.port for addr in listening}
    assert {server.http_port, server.grpc_port} <= ports
    assert all(addr.ip in ("127.0.0.1", "::ffff:127.0.0.1") for addr in listening), listening


def test_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    md = http.get("/v2").json()
    # Clients cannot use the model-repository extension, so it is not advertised.
    assert md["name"] and md["version"] and "model_repository_extension" not in md["extensions"]


def test_control_socket_is_private_and_the_public_port_refuses_control(
    http: httpx.Client, control: httpx.Client, control_socket: Path
) -> None:
    assert stat.S_IMODE(control_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(control_socket.parent.stat().st_mode) == 0o700
    refused = http.post(f"/v2/repository/models/{NAME}/load", json={})
    assert refused.status_code == 403 and "model control is not available to clients" in refused.json()["error"]
    # the control socket serves loads and unloads, nothing else
    assert control.get(f"/v2/models/{NAME}").status_code == 404
    assert control.post(f"/v2/models/{NAME}/infer", json={}).status_code == 404


def test_model_metadata_http_and_grpc(http: httpx.Client, server: ServerProcess) -> None:
    md = http.get(f"/v2/models/{NAME}").json()
    assert md["name"] == NAME
    assert md["versions"] == ["1"]
    assert md["platform"] == "mlflow_pyfunc"
    assert md["inputs"] == [{"name": c, "datatype": "FP64", "shape": [-1]} for c in IRIS_COLUMNS]
    assert md["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        gmd = client.get_model_metadata(NAME, as_json=True)
        assert client.is_server_live() and client.is_model_ready(NAME)
    assert gmd["versions"] == ["1"]
    assert gmd["platform"] == "mlflow_pyfunc"
    assert [i["name"] for i in gmd["inputs"]] == IRIS_COLUMNS


def test_infer_json_http(http: httpx.Client, expected: dict[str, np.ndarray]) -> None:
    X, _ = iris_frame()
    response = http.post(f"/v2/models/{NAME}/infer", json=v2_json(X, ids="req-42"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == NAME and body["model_version"] == "1" and body["id"] == "req-42"
    (out,) = body["outputs"]
    assert out["name"] == "output-0" and out["datatype"] == "INT64" and out["shape"] == [len(X)]
    np.testing.assert_array_equal(out["data"], expected["1"])
    # no id in the request -> a generated uuid4
    generated = http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2])).json()["id"]
    assert uuid.UUID(generated).version == 4


def test_infer_tritonclient_http_and_grpc(server: ServerProcess, expected: dict[str, np.ndarray]) -> None:
    X, _ = iris_frame()
    with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
        result = client.infer(NAME, triton_inputs(httpclient, X), request_id="h1")
        assert result.get_response()["model_version"] == "1"
        assert result.get_response()["id"] == "h1"
        np.testing.assert_array_equal(result.as_numpy("output-0"), expected["1"])
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer(NAME, triton_inputs(grpcclient, X), request_id="g1")
        response = result.get_response()
        assert response.model_version == "1" and response.id == "g1" and response.model_name == NAME
        np.testing.assert_array_equal(result.as_numpy("output-0"), expected["1"])
        no_id = client.infer(NAME, triton_inputs(grpcclient, X.iloc[:3])).get_response()
        assert uuid.UUID(no_id.id).version == 4


# -- bad input -----------------------------------------------------------------------------------
def _bad_requests() -> list[tuple[str, dict | bytes, int, list[str]]]:
    X, _ = iris_frame()
    X = X.iloc[:3]
    good = v2_json(X)
    wrong_type = v2_json(X)
    wrong_type["inputs"][0] = {
        "name": "sepal_length",
        "shape": [3],
        "datatype": "BYTES",
        "data": ["a", "b", "c"],
    }
    int_type = v2_json(X)
    int_type["inputs"][1] = {"name": "sepal_width", "shape": [3], "datatype": "INT32", "data": [1, 2, 3]}
    bad_shape = v2_json(X)
    bad_shape["inputs"][2]["shape"] = [3, 2]
    ragged = v2_json(X)
    ragged["inputs"][3] = {"name": "petal_width", "shape": [2], "datatype": "FP64", "data": [0.1, 0.2]}
    size_mismatch = v2_json(X)
    size_mismatch["inputs"][0]["shape"] = [4]
    missing = {"inputs": good["inputs"][:3]}
    extra = {
        "inputs": [*good["inputs"], {"name": "colour", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]
    }
    return [
        ("bytes-for-fp64", wrong_type, 400, ["sepal_length", "BYTES", "FP64"]),
        ("int32-for-fp64", int_type, 400, ["sepal_width", "INT32", "FP64"]),
        ("shape", bad_shape, 400, ["petal_length", "[3, 2]", "[n]"]),
        ("ragged", ragged, 400, ["same length", "petal_width"]),
        ("size", size_mismatch, 400, ["sepal_length", "[4]"]),
        ("missing", missing, 400, ["missing", "petal_width"]),
        ("extra", extra, 400, ["unknown input", "colour"]),
        ("malformed", b'{"inputs": [{"name', 400, ["not valid JSON"]),
    ]


@pytest.mark.parametrize(
    ("case", "body", "status", "words"), _bad_requests(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_bad_input_http(http: httpx.Client, case: str, body, status: int, words: list[str]) -> None:
    X, _ = iris_frame()
    if isinstance(body, bytes):
        response = http.post(
            f"/v2/models/{NAME}/infer", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = http.post(f"/v2/models/{NAME}/infer", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, (case, error)
    # the server keeps serving
    assert http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2])).status_code == 200


def test_unknown_model_is_404(http: httpx.Client, server: ServerProcess) -> None:
    X, _ = iris_frame()
    response = http.post("/v2/models/nope/infer", json=v2_json(X.iloc[:2]))
    assert response.status_code == 404 and "nope" in response.json()["error"]
    assert http.get("/v2/models/nope").status_code == 404
    with (
        grpcclient.InferenceServerClient(server.grpc_url) as client,
        pytest.raises(InferenceServerException) as err,
    ):
        client.infer("nope", triton_inputs(grpcclient, X.iloc[:2]))
    assert err.value.status() == "StatusCode.NOT_FOUND" and "nope" in err.value.message()


def test_oversized_body_is_413(http: httpx.Client) -> None:
    X, _ = iris_frame()
    n = 4000  # ~4 x 4000 numbers of JSON > 64 KiB
    big = {
        "inputs": [{"name": c, "shape": [n], "datatype": "FP64", "data": [1.2345] * n} for c in IRIS_COLUMNS]
    }
    response = http.post(f"/v2/models/{NAME}/infer", json=big)
    assert response.status_code == 413
    assert str(MAX_BYTES) in response.json()["error"]
    payload = httpx.Request("POST", "/", json=big).content

    def chunks():  # no Content-Length: the middleware counts streamed bytes
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    response = http.post(
        f"/v2/models/{NAME}/infer", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and str(MAX_BYTES) in response.json()["error"]
    small = httpx.Request("POST", "/", json=v2_json(X.iloc[:2])).content
    response = http.post(
        f"/v2/models/{NAME}/infer",
        content=iter([small[:10], small[10:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2])).status_code == 200


def test_bad_input_grpc(server: ServerProcess) -> None:
    X, _ = iris_frame()
    X = X.iloc[:3]
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        wrong = triton_inputs(grpcclient, X)
        wrong[0] = grpcclient.InferInput("sepal_length", [3], "INT32")
        wrong[0].set_data_from_numpy(np.array([1, 2, 3], dtype=np.int32))
        with pytest.raises(InferenceServerException) as err:
            client.infer(NAME, wrong)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "sepal_length" in err.value.message() and "INT32" in err.value.message()
        with pytest.raises(InferenceServerException) as err:
            client.infer(NAME, triton_inputs(grpcclient, X)[:3])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "petal_width" in err.value.message()
        n = 4000
        big = []
        for c in IRIS_COLUMNS:
            inp = grpcclient.InferInput(c, [n], "FP64")
            inp.set_data_from_numpy(np.ones(n))
            big.append(inp)
        with pytest.raises(InferenceServerException) as err:
            client.infer(NAME, big)
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer(NAME, triton_inputs(grpcclient, X)).get_response().model_version == "1"


# -- version swap --------------------------------------------------------------------------------
def test_failed_load_keeps_serving(http: httpx.Client, control: httpx.Client, tmp_path: Path) -> None:
    X, _ = iris_frame()
    url = f"/v2/repository/models/{NAME}/load"
    missing = control.post(url, json={"parameters": {"model_uri": str(tmp_path / "nope"), "model_version": "9"}})
    assert 400 <= missing.status_code < 600 and "nope" in missing.json()["error"], missing.text
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors: {python_function: {loader_module: no.such.module}}\n")
    failed = control.post(url, json={"parameters": {"model_uri": str(broken), "model_version": "9"}})
    assert 400 <= failed.status_code < 600 and "ModuleNotFoundError" in failed.json()["error"], failed.text
    assert control.post(url, content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert control.post("/v2/repository/models/nope/load", json={}).status_code == 404
    assert http.get(f"/v2/models/{NAME}").json()["versions"] == ["1"]
    response = http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2]))
    assert response.status_code == 200 and response.json()["model_version"] == "1"


def test_swap_under_load_has_no_failed_requests(
    http: httpx.Client, control: httpx.Client, server: ServerProcess, models: dict[str, Path],
    expected: dict[str, np.ndarray],
) -> None:
    X, _ = iris_frame()
    body = v2_json(X)
    results: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(4)]
    errors: list[str] = []
    stop = threading.Event()

    def http_loop(slot: int) -> None:
        with httpx.Client(base_url=server.http_url, timeout=30.0) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"/v2/models/{NAME}/infer", json=body)
                    response.raise_for_status()
                    out = response.json()
                    results[slot].append((out["model_version"], np.asarray(out["outputs"][0]["data"])))
                except Exception as exc:  # any failure fails the test
                    errors.append(f"http: {exc!r}")

    def grpc_loop(slot: int) -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            while not stop.is_set():
                try:
                    result = client.infer(NAME, triton_inputs(grpcclient, X))
                    results[slot].append((result.get_response().model_version, result.as_numpy("output-0")))
                except Exception as exc:
                    errors.append(f"grpc: {exc!r}")

    threads = [
        threading.Thread(target=f, args=(i,))
        for i, f in enumerate([http_loop, http_loop, grpc_loop, grpc_loop])
    ]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        while (min(len(r) for r in results) < 3 or time.monotonic() - started < 1.5) and not errors:
            assert time.monotonic() - started < 30, "no traffic before the swap"
            time.sleep(0.05)
        response = control.post(
            f"/v2/repository/models/{NAME}/load",
            json={"parameters": {"model_uri": str(models["2"]), "model_version": "2"}},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"name": NAME, "version": "2", "model_uri": str(models["2"])}
        # right after the switch: metadata and every new response say "2"
        assert http.get(f"/v2/models/{NAME}").json()["versions"] == ["2"]
        marks, swapped = [len(r) for r in results], time.monotonic()
        while (
            any(len(r) < m + 3 for r, m in zip(results, marks, strict=True))
            or time.monotonic() - swapped < 1.5
        ):
            assert time.monotonic() - swapped < 30, "no traffic after the swap"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:5]
    for per_thread in results:
        versions = [v for v, _ in per_thread]
        assert versions[0] == "1" and versions[-1] == "2", versions
        first_two = versions.index("2")
        assert set(versions[first_two:]) == {"2"}, versions  # never back to 1 once switched
        for version, prediction in per_thread:
            np.testing.assert_array_equal(prediction, expected[version])
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.get_model_metadata(NAME, as_json=True)["versions"] == ["2"]
    # a body-less load re-loads the current version
    again = control.post(f"/v2/repository/models/{NAME}/load")
    assert again.status_code == 200 and again.json()["version"] == "2"


SLOW_MODEL = """
import time

import mlflow.pyfunc
import numpy as np


class SlowToLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        time.sleep(3)

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), 7, dtype=np.int64)


mlflow.models.set_model(SlowToLoad())
"""


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow nags about type hints and examples
def test_slow_load_does_not_stall_requests(http: httpx.Client, control_socket: Path, tmp_path: Path) -> None:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    X, _ = iris_frame()
    code = tmp_path / "slow_model.py"
    code.write_text(SLOW_MODEL)
    path = tmp_path / "slow"
    mlflow.pyfunc.save_model(
        str(path), python_model=str(code), signature=infer_signature(X, np.zeros(len(X), dtype=np.int64))
    )
    swap: dict[str, httpx.Response] = {}

    def load() -> None:
        with control_client(control_socket) as client:
            swap["response"] = client.post(
                f"/v2/repository/models/{NAME}/load",
                json={"parameters": {"model_uri": str(path), "model_version": "3"}},
            )

    loader = threading.Thread(target=load)
    started = time.monotonic()
    loader.start()
    slowest, versions = 0.0, []
    while loader.is_alive():
        t = time.monotonic()
        response = http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2]))
        slowest = max(slowest, time.monotonic() - t)
        assert response.status_code == 200, response.text
        versions.append(response.json()["model_version"])
    loader.join()
    assert swap["response"].status_code == 200, swap["response"].text
    assert time.monotonic() - started >= 3  # the load really was slow ...
    assert versions.count("2") >= 5 and slowest < 1.0, (slowest, versions)  # ... and requests kept flowing
    after = http.post(f"/v2/models/{NAME}/infer", json=v2_json(X.iloc[:2])).json()
    assert after["model_version"] == "3" and after["outputs"][0]["data"] == [7, 7]


def test_sigterm_stops_cleanly(server: ServerProcess, control_socket: Path) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0, server.log_text()[-3000:]
    assert not control_socket.exists()  # the control listener stopped with the server and cleaned up
    log = server.log_text()
    assert "Traceback" not in log.split("Stopping the model server")[-1]
    assert f"on http://127.0.0.1:{server.http_port}" in log  # the startup line names the URLs
