"""Contract: the kserve and triton runtimes answer the same V2 requests the same way.

One platform, one registered iris model deployed twice (``iris-k`` on ``runtime: kserve``, ``iris-t``
on ``runtime: triton``, no batching, so both take columns of shape ``[n]``). The same requests go to
both: outputs (values, datatype, shape) and metadata must be identical; bad input must fail in the same
class (4xx / gRPC status code), with a message that names the problem. Exact message text is each
runtime's own.

Triton serves inference over gRPC only (its 2.51 HTTP front end allocates from the client's shape
before any check: docs/triton-limits.md), so a kserve answer over HTTP (JSON or the binary tensor
extension) is compared with Triton's gRPC answer to the same request, and Triton's HTTP inference
route must refuse with a 403 that says where inference is served.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from mlplane_pipelines.iris import FEATURES

pytestmark = pytest.mark.e2e

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]], dtype=np.float64)


def _client(dep: dict, proto: str):
    if proto == "http":
        return httpclient, httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"))
    return grpcclient, grpcclient.InferenceServerClient(url=dep["grpc"])


def _infer(dep: dict, proto: str, binary: bool, *, rows: np.ndarray = ROWS, datatype: str = "FP64",
           shape: list[int] | None = None, model: str | None = None):
    lib, client = _client(dep, proto)
    inputs = []
    for i, name in enumerate(FEATURES):
        column = np.ascontiguousarray(rows[:, i]).astype(datatype.lower().replace("fp", "float"))
        inp = lib.InferInput(name, shape or [len(rows)], datatype)
        if shape:
            column = column.reshape(shape)
        if proto == "http":
            inp.set_data_from_numpy(column, binary_data=binary)
        else:
            inp.set_data_from_numpy(column)
        inputs.append(inp)
    outputs = [lib.InferRequestedOutput("output-0", binary_data=binary)] if proto == "http" else None
    result = client.infer(model or dep["name"], inputs, outputs=outputs)
    response = result.get_response()
    out = response["outputs"][0] if proto == "http" else response.outputs[0]
    datatype_out = out["datatype"] if proto == "http" else out.datatype
    shape_out = list(out["shape"] if proto == "http" else out.shape)
    return datatype_out, shape_out, result.as_numpy("output-0").tolist()


def _error_class(exc: InferenceServerException, proto: str) -> str:
    code = str(exc.status())
    return code[0] + "xx" if proto == "http" else code


TRANSPORTS = [("http", False), ("http", True), ("grpc", True)]
IDS = ["http-json", "http-binary", "grpc"]


def _transport(runtime: str, proto: str, binary: bool) -> tuple[str, bool]:
    """The transport a runtime answers inference on: Triton's is gRPC only."""
    return ("grpc", True) if runtime == "triton" else (proto, binary)


@pytest.mark.parametrize(("proto", "binary"), TRANSPORTS, ids=IDS)
def test_same_request_same_outputs(deployments, proto, binary):
    answers = {rt: _infer(dep, *_transport(rt, proto, binary)) for rt, dep in deployments.items()}
    assert answers["kserve"] == answers["triton"], answers
    datatype, shape, values = answers["kserve"]
    assert shape == [len(ROWS)] and datatype == "INT64" and values == [0, 1, 2]


def test_binary_and_json_agree(deployments):
    dep = deployments["kserve"]
    assert _infer(dep, "http", True) == _infer(dep, "http", False) == _infer(dep, "grpc", True)


@pytest.mark.parametrize("binary", [False, True], ids=["http-json", "http-binary"])
def test_triton_http_inference_is_refused_and_says_where_to_go(deployments, binary):
    with pytest.raises(InferenceServerException) as info:
        _infer(deployments["triton"], "http", binary)
    assert str(info.value.status()) == "403", info.value
    assert "grpc" in info.value.message().lower(), info.value.message()
    assert _infer(deployments["triton"], "grpc", True)[2] == [0, 1, 2]  # and it keeps serving


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_same_metadata(deployments, proto):
    def shape(dep: dict) -> dict:
        _, client = _client(dep, proto)
        kwargs = {"as_json": True} if proto == "grpc" else {}
        md = client.get_model_metadata(dep["name"], **kwargs)
        tensors = {
            kind: [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in md[kind]]
            for kind in ("inputs", "outputs")
        }
        return {**tensors, "versions": md["versions"]}

    kserve, triton = shape(deployments["kserve"]), shape(deployments["triton"])
    assert kserve == triton
    assert [t[0] for t in kserve["inputs"]] == FEATURES and kserve["versions"] == ["1"]


BAD = {
    "wrong-datatype": ({"datatype": "FP32"}, "FP32"),
    "wrong-shape": ({"rows": np.vstack([ROWS, ROWS[:1]]), "shape": [2, 2]}, "shape"),
    "unknown-model": ({"model": "no-such-model"}, "no-such-model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize(("proto", "binary"), TRANSPORTS, ids=IDS)
def test_same_error_class_for_bad_input(deployments, case, proto, binary):
    kwargs, named = BAD[case]
    failures = {}
    for runtime, dep in deployments.items():
        with pytest.raises(InferenceServerException) as info:
            _infer(dep, *_transport(runtime, proto, binary), **kwargs)
        failures[runtime] = info.value
        assert named.lower() in info.value.message().lower(), (runtime, info.value.message())
    if proto == "http":  # kserve over HTTP, Triton over gRPC: the same class, each in its protocol's terms
        assert _error_class(failures["kserve"], "http") == "4xx", failures["kserve"]
        with pytest.raises(InferenceServerException) as info:
            _infer(deployments["kserve"], "grpc", True, **kwargs)
        failures["kserve"] = info.value
    classes = {rt: _error_class(exc, "grpc") for rt, exc in failures.items()}
    assert classes["kserve"] == classes["triton"], {rt: str(exc) for rt, exc in failures.items()}


def test_malformed_body_names_the_problem(deployments):
    """kserve answers an unparseable JSON body with a 400 naming JSON; Triton's HTTP inference route is
    closed before its front end parses anything (403), so its 500 for bad JSON cannot happen."""
    codes = {}
    for runtime, dep in deployments.items():
        response = httpx.post(f"{dep['url']}/v2/models/{dep['name']}/infer", content=b'{"inputs": [',
                              headers={"content-type": "application/json"})
        codes[runtime] = response.status_code
        if runtime == "kserve":
            assert "json" in response.json()["error"].lower(), response.text
    assert codes == {"kserve": 400, "triton": 403}
