"""Open Inference Protocol conformance, checked the same way on both runtimes (issue 13).

The checks follow KServe's "Open Inference Protocol" REST and gRPC texts: health, server and model
metadata, versioned model routes (``/v2/models/{m}/versions/{v}``, ``.../ready``, ``.../infer``) for the
served version and a 4xx for an unknown one, optional response fields absent rather than ``null``,
requested outputs honoured and unknown ones refused, and client mistakes answered with a 4xx and a JSON
``{"error": ...}`` object (the protocol's error response). gRPC errors use the matching status codes.

Every check passes on the kserve runtime. Where the triton runtime serves inference over HTTP, it passes all
but three, pinned in ``TRITON_FRONTEND_500`` (Triton's HTTP front end answers malformed JSON, a missing
``inputs`` and data that does not match its shape with 500); where it serves inference over gRPC only, every
HTTP inference must be a 403 that says so (``http_infer_closed``).
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from v2_fuzz import TRITON_FRONTEND_JSON_500

from mlplane_pipelines.iris import FEATURES

pytestmark = pytest.mark.e2e

RUNTIMES = ["kserve", "triton"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
UNKNOWN_VERSION = "999"


def infer_body(rows: list[list[float]] = ROWS, **extra: Any) -> dict[str, Any]:
    inputs = [{"name": f, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
              for i, f in enumerate(FEATURES)]
    return {"inputs": inputs, **extra}


def grpc_request(name: str, rows: list[list[float]] = ROWS, version: str = "",
                 outputs: tuple[str, ...] = ()) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=name, model_version=version)
    for i, f in enumerate(FEATURES):
        tensor = request.inputs.add(name=f, datatype="FP64", shape=[len(rows)])
        tensor.contents.fp64_contents.extend(r[i] for r in rows)
    for o in outputs:
        request.outputs.add(name=o)
    return request


def nulls(value: Any, path: str = "$") -> list[str]:
    """Every path in a JSON document whose value is ``null``."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


@pytest.fixture(scope="module", params=RUNTIMES)
def dep(request, deployments) -> dict:
    return {**deployments[request.param], "runtime": request.param}


@pytest.fixture(scope="module")
def http(dep):
    with httpx.Client(base_url=dep["url"], timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def http_infer_closed(http, dep) -> bool:
    """Whether this deployment refuses inference over HTTP (the triton runtime may serve it over gRPC only:
    then every HTTP inference is a 403 that says so, and the HTTP inference checks check that instead)."""
    response = http.post(f"/v2/models/{dep['name']}/infer", json=infer_body())
    if dep["runtime"] == "kserve" or response.status_code != 403:
        assert response.status_code == 200, response.text
        return False
    assert "grpc" in assert_error(response, 403).lower()
    return True


def infer(http, closed: bool, path: str, **kwargs: Any) -> httpx.Response | None:
    """POST an inference; ``None`` when the deployment refuses HTTP inference (checked to be a 403 saying so)."""
    response = http.post(path, **kwargs)
    if closed:
        assert "grpc" in assert_error(response, 403).lower()
        return None
    return response


@pytest.fixture(scope="module")
def stub(dep):
    with grpc.insecure_channel(dep["grpc"]) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def assert_error(response: httpx.Response, status: int | None = None) -> str:
    """A protocol error: 4xx, a JSON object with an ``error`` string."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


# -- REST: health and metadata -----------------------------------------------------------------------------
def test_health_live_and_ready(http):
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200


def test_server_metadata(http):
    md = http.get("/v2").json()
    assert isinstance(md["name"], str) and isinstance(md["version"], str)
    assert isinstance(md["extensions"], list) and not nulls(md)


def test_model_metadata_advertises_the_served_version(http, dep):
    response = http.get(f"/v2/models/{dep['name']}")
    assert response.status_code == 200
    md = response.json()
    assert md["name"] == dep["name"] and md["versions"] == ["1"] and isinstance(md["platform"], str)
    assert [t["name"] for t in md["inputs"]] == FEATURES
    assert all(t["datatype"] == "FP64" and t["shape"] == [-1] for t in md["inputs"])
    assert not nulls(md)


@pytest.mark.parametrize("suffix", ["", "/ready"])
def test_versioned_model_routes_answer_for_the_served_version(http, dep, suffix):
    plain = http.get(f"/v2/models/{dep['name']}{suffix}")
    versioned = http.get(f"/v2/models/{dep['name']}/versions/1{suffix}")
    assert versioned.status_code == 200, versioned.text
    if not suffix:
        assert versioned.json() == plain.json()


@pytest.mark.parametrize("suffix", ["", "/ready"])
def test_unknown_version_is_a_client_error(http, dep, suffix):
    response = http.get(f"/v2/models/{dep['name']}/versions/{UNKNOWN_VERSION}{suffix}")
    assert_error(response)


def test_unknown_model_is_404(http):
    assert_error(http.get("/v2/models/no-such-model"), 404)
    assert_error(http.post("/v2/models/no-such-model/infer", json=infer_body()))


# -- REST: inference -----------------------------------------------------------------------------------------
def test_infer_response_fields(http, dep, http_infer_closed):
    response = infer(http, http_infer_closed, f"/v2/models/{dep['name']}/infer", json=infer_body(id="req-42"))
    if response is None:
        return
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == dep["name"] and body["model_version"] == "1" and body["id"] == "req-42"
    (out,) = body["outputs"]
    assert out["name"] == "output-0" and out["datatype"] == "INT64" and out["shape"] == [2]
    assert out["data"] == [0, 2]
    assert not nulls(body), f"optional fields must be absent, not null: {nulls(body)}"


def test_versioned_infer(http, dep, http_infer_closed):
    response = infer(http, http_infer_closed, f"/v2/models/{dep['name']}/versions/1/infer", json=infer_body())
    if response is None:
        return
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1" and response.json()["outputs"][0]["data"] == [0, 2]
    assert_error(http.post(f"/v2/models/{dep['name']}/versions/{UNKNOWN_VERSION}/infer", json=infer_body()))


def test_requested_outputs(http, dep, http_infer_closed):
    url = f"/v2/models/{dep['name']}/infer"
    response = infer(http, http_infer_closed, url, json=infer_body(outputs=[{"name": "output-0"}]))
    if response is None:
        return
    assert response.status_code == 200 and [o["name"] for o in response.json()["outputs"]] == ["output-0"]
    error = assert_error(http.post(url, json=infer_body(outputs=[{"name": "no-such-output"}])), 400)
    assert "no-such-output" in error


CLIENT_MISTAKES = {
    "malformed-json": b'{"inputs": [',
    "missing-inputs": b'{"id": "x"}',
    "data-shape-mismatch": None,  # built below: shape [3], two values
    "wrong-datatype": None,
    "unknown-input": None,
}


def _mistake(case: str) -> bytes:
    import json

    if CLIENT_MISTAKES[case] is not None:
        return CLIENT_MISTAKES[case]
    body = infer_body()
    if case == "data-shape-mismatch":
        body["inputs"][0]["shape"] = [3]
    elif case == "wrong-datatype":
        body["inputs"][0]["datatype"] = "FP32"
    else:
        body["inputs"][0]["name"] = "colour"
    return json.dumps(body).encode()


#: Known failures of the triton runtime, pinned so that a change is noticed: tritonserver's HTTP front end
#: answers these with 500 (see ``v2_fuzz.TRITON_FRONTEND_JSON_500``: compiled in, no option changes it, and
#: mlplane puts no proxy in front of Triton).
TRITON_FRONTEND_500 = {"malformed-json", "missing-inputs", "data-shape-mismatch"}


@pytest.mark.parametrize("case", sorted(CLIENT_MISTAKES))
def test_client_mistakes_are_400_with_an_error_object(http, dep, http_infer_closed, case):
    url = f"/v2/models/{dep['name']}/infer"
    response = infer(http, http_infer_closed, url, content=_mistake(case), headers={"content-type": "application/json"})
    if response is None:
        return
    if dep["runtime"] == "triton" and case in TRITON_FRONTEND_500:
        assert response.status_code == 500 and TRITON_FRONTEND_JSON_500.match(response.json()["error"]), \
            response.text
    else:
        assert_error(response, 400)
    assert http.post(url, json=infer_body()).status_code == 200


# -- gRPC ------------------------------------------------------------------------------------------------------
def test_grpc_health_and_metadata(stub, dep):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name
    md = stub.ModelMetadata(pb.ModelMetadataRequest(name=dep["name"]))
    assert list(md.versions) == ["1"] and [t.name for t in md.inputs] == FEATURES
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name=dep["name"], version="1")).name == dep["name"]
    assert stub.ModelReady(pb.ModelReadyRequest(name=dep["name"], version="1")).ready


def test_grpc_unknown_version(stub, dep):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelMetadata(pb.ModelMetadataRequest(name=dep["name"], version=UNKNOWN_VERSION))
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), err.value
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(grpc_request(dep["name"], version=UNKNOWN_VERSION))
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), err.value
    assert UNKNOWN_VERSION in err.value.details()
    try:
        ready = stub.ModelReady(pb.ModelReadyRequest(name=dep["name"], version=UNKNOWN_VERSION)).ready
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), exc
    else:
        assert ready is False


def test_grpc_infer_versions_and_outputs(stub, dep):
    response = stub.ModelInfer(grpc_request(dep["name"], version="1", outputs=("output-0",)))
    assert response.model_version == "1" and [o.name for o in response.outputs] == ["output-0"]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(grpc_request(dep["name"], outputs=("no-such-output",)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no-such-output" in err.value.details()


def test_grpc_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(grpc_request("no-such-model"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
