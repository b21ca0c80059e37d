"""Hypothesis strategies over the V2 (Open Inference Protocol) request space, and the checks a fuzzed
server must pass. Shared by tests/contract/test_fuzz_v2.py (both runtimes of a real platform) and
bench/fuzz_v2.py (status-code counts for bench/RESULTS.md).

A request is built from a good iris request by mutation (names, datatypes, shapes, data, ids, requested
outputs, versions, content types, the binary extension's header) or is junk outright (random JSON, random
bytes, deep nesting). Client mistakes must never be answered with a 5xx / INTERNAL / UNKNOWN /
UNAVAILABLE, and must not close the connection unannounced.
"""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import psutil
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]
DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES"]
HUGE_DIMS = [2**31, 2**32, 2**40, 2147483648, 9223372036854775807, 2**64]
#: Triton 2.51's HTTP front end reports its own JSON errors as internal errors (its http_server.cc defines
#: TRITONJSON_STATUSRETURN with TRITONSERVER_ERROR_INTERNAL): malformed JSON, a missing member such as
#: ``inputs``, JSON data that does not match its shape are 500s with these messages. Compiled in: no server
#: option changes it; only a proxy could, and mlplane has none in the request path.
TRITON_FRONTEND_JSON_500 = re.compile(r"^(failed to parse the request JSON buffer|Unable to parse ')")
#: gRPC codes that are a server failure, not an answer to a client's mistake.
GRPC_FAILURES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                           grpc.StatusCode.DATA_LOSS, grpc.StatusCode.DEADLINE_EXCEEDED})


def good_body(rows: int = 1) -> dict[str, Any]:
    return {"inputs": [{"name": f, "shape": [rows], "datatype": "FP64", "data": [ROW[i]] * rows}
                       for i, f in enumerate(FEATURES)]}


GOOD_JSON = json.dumps(good_body()).encode()

# -- building blocks -----------------------------------------------------------------------------------------
names = st.sampled_from([*FEATURES, *FEATURES, "colour", "", "x" * 300, "SEPAL_LENGTH"])
datatype_strings = st.one_of(st.sampled_from(DATATYPES), st.sampled_from(["fp64", "Fp64", "FP128", "", "float64"]),
                             st.text(max_size=6))
datatypes = st.one_of(datatype_strings, datatype_strings, st.integers(), st.none(), st.booleans())
dims = st.one_of(st.integers(0, 6), st.integers(-3, -1), st.sampled_from(HUGE_DIMS), st.booleans(),
                 st.floats(allow_nan=True), st.text(max_size=2), st.none())
shapes = st.one_of(st.lists(st.integers(0, 6), min_size=1, max_size=2), st.lists(dims, max_size=4), st.none(),
                   st.integers(), st.text(max_size=3))
scalars = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                    st.sampled_from([1e308, -1e308, 3.5e38, 70000.0, 2**63, 2**64, -2**63 - 1]), st.none(),
                    st.booleans(), st.text(max_size=4))
data = st.one_of(
    st.lists(st.floats(0, 10), max_size=6),
    st.lists(scalars, max_size=6),
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=12),
    scalars,
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
parameters = st.one_of(st.none(), st.dictionaries(st.text(max_size=8), scalars, max_size=3), st.integers(),
                       st.just({"binary_data_size": 8}), st.just({"binary_data_size": -1}))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(),
                                     st.text(max_size=5)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=20)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": draw(names), "datatype": draw(datatypes), "shape": draw(shapes),
                              "data": draw(data)}
    if draw(st.booleans()):
        tensor["parameters"] = draw(parameters)
    for key in draw(st.lists(st.sampled_from(["name", "datatype", "shape", "data"]), max_size=2, unique=True)):
        del tensor[key]
    return tensor


@st.composite
def mutated_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: Any = good_body(draw(st.integers(0, 3)))
    inputs = body["inputs"]
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "replace", "field", "drop", "add"]))
        i = draw(st.integers(0, len(inputs) - 1)) if inputs else 0
        if action == "replace" and inputs:
            inputs[i] = draw(tensors())
        elif action == "field" and inputs and isinstance(inputs[i], dict):
            key = draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]))
            inputs[i][key] = draw({"name": names, "datatype": datatypes, "shape": shapes, "data": data,
                                   "parameters": parameters}[key])
        elif action == "drop" and inputs:
            del inputs[i]
        else:
            inputs.append(draw(st.one_of(tensors(), json_values)))
    extra = draw(st.sampled_from(["none", "id", "outputs", "parameters", "inputs", "junk-key"]))
    if extra == "id":
        body["id"] = draw(st.one_of(st.text(max_size=10), st.integers(), st.none()))
    elif extra == "outputs":
        body["outputs"] = draw(st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(["output-0", "nope", ""])}), max_size=2),
            json_values))
    elif extra == "parameters":
        body["parameters"] = draw(parameters)
    elif extra == "inputs":
        body["inputs"] = draw(json_values)
    elif extra == "junk-key":
        body[draw(st.text(max_size=5))] = draw(json_values)
    return body


@dataclass(frozen=True)
class HttpCase:
    path: str  # with {m} for the model name
    body: bytes
    content_type: str | None
    header_length: str | None  # Inference-Header-Content-Length (binary tensor extension)

    def describe(self) -> str:
        return (f"POST {self.path} content-type={self.content_type!r} header-length={self.header_length!r} "
                f"body={self.body[:300]!r}{'...' if len(self.body) > 300 else ''} ({len(self.body)} bytes)")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity tokens on purpose: not JSON


@st.composite
def http_cases(draw: st.DrawFn) -> HttpCase:
    kind = draw(st.sampled_from(["mutated"] * 6 + ["json", "bytes", "deep", "binary"]))
    header_length = None
    if kind == "mutated":
        body = _dumps(draw(mutated_requests()))
    elif kind == "json":
        body = _dumps(draw(json_values))
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "deep":
        depth = draw(st.sampled_from([1000, 1025, 5000, 100_000, 150_000]))  # under 1 MiB: the body is read
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        closer = b"]" if opener == b"[" else b"}"
        body = b'{"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": ' + \
            opener * depth + closer * depth + b"}]}"
    else:  # the binary tensor extension: a JSON header, then raw bytes
        header = _dumps(draw(mutated_requests()))
        raw = draw(st.binary(max_size=64))
        body = header + raw
        header_length = draw(st.one_of(st.just(str(len(header))), st.integers(-5, len(body) + 5).map(str),
                                       st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)))
    path = draw(st.sampled_from(["/v2/models/{m}/infer"] * 4 + [
        "/v2/models/{m}/versions/1/infer", "/v2/models/{m}/versions/999/infer", "/v2/models/no-such/infer"]))
    content_type = draw(st.sampled_from([None, "application/json", "application/json",
                                         "application/json; charset=utf-8", "application/octet-stream", "text/plain",
                                         "application/xml"]))
    return HttpCase(path, body, content_type, header_length)


@st.composite
def grpc_requests(draw: st.DrawFn, model: str) -> pb.ModelInferRequest:
    """A good request with 0-3 mutations (so that some are valid), as raw or typed contents."""
    request = pb.ModelInferRequest(model_name=model)
    raw = draw(st.booleans())
    for i, f in enumerate(FEATURES):
        tensor = request.inputs.add(name=f, datatype="FP64", shape=[1])
        if raw:
            request.raw_input_contents.append(struct_fp64(ROW[i]))
        else:
            tensor.contents.fp64_contents.append(ROW[i])
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(request.inputs) - 1)) if request.inputs else 0
        action = draw(st.sampled_from(["model", "version", "name", "datatype", "shape", "contents", "drop", "add",
                                       "outputs", "raw"]))
        if action == "model":
            request.model_name = draw(st.sampled_from(["no-such", "", model.upper()]))
        elif action == "version":
            request.model_version = draw(st.sampled_from(["1", "999", "-1", "x" * 200]))
        elif action == "name" and request.inputs:
            request.inputs[i].name = draw(names)
        elif action == "datatype" and request.inputs:
            request.inputs[i].datatype = draw(datatype_strings)
        elif action == "shape" and request.inputs:
            del request.inputs[i].shape[:]
            request.inputs[i].shape.extend(draw(st.lists(
                st.one_of(st.integers(-3, 4), st.sampled_from(HUGE_DIMS[:-1])), max_size=3)))
        elif action == "contents" and request.inputs and not raw:
            field_name = draw(st.sampled_from(["fp64_contents"] * 3 + [
                "fp32_contents", "int64_contents", "int_contents", "bool_contents", "bytes_contents",
                "uint64_contents"]))
            request.inputs[i].contents.Clear()
            getattr(request.inputs[i].contents, field_name).extend(draw(st.lists(_grpc_values(field_name),
                                                                                  max_size=4)))
        elif action == "raw" and raw and request.raw_input_contents:
            request.raw_input_contents[min(i, len(request.raw_input_contents) - 1)] = draw(st.one_of(
                st.binary(max_size=24), st.just(struct_fp64(float("nan")))))
        elif action == "drop" and request.inputs:
            del request.inputs[i]
        elif action == "add":
            request.inputs.add(name=draw(names), datatype=draw(datatype_strings), shape=[1])
        elif action == "outputs":
            for out in draw(st.lists(st.sampled_from(["output-0", "nope", ""]), min_size=1, max_size=2)):
                request.outputs.add(name=out)
    return request


def struct_fp64(value: float) -> bytes:
    import struct

    return struct.pack("<d", value)


def _grpc_values(field_name: str) -> st.SearchStrategy[Any]:
    if field_name in ("fp64_contents", "fp32_contents"):
        bound = 3.4e38 if field_name == "fp32_contents" else None
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if bound else 64)
    if field_name == "int64_contents":
        return st.integers(-2**63, 2**63 - 1)
    if field_name == "int_contents":
        return st.integers(-2**31, 2**31 - 1)
    if field_name == "uint64_contents":
        return st.integers(0, 2**64 - 1)
    if field_name == "bool_contents":
        return st.booleans()
    return st.binary(max_size=8)


def good_grpc_request(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for i, f in enumerate(FEATURES):
        request.inputs.add(name=f, datatype="FP64", shape=[1]).contents.fp64_contents.append(ROW[i])
    return request


# -- the checks ----------------------------------------------------------------------------------------------
def tree_rss(pid: int) -> int:
    """Resident memory (from /proc, via psutil) of ``pid`` and all its descendants, in bytes."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


@dataclass
class Watch:
    """The served process: same pid and start time throughout, and the peak RSS of its tree."""

    pid: int
    create_time: float = 0.0
    baseline_rss: int = 0
    peak_rss: int = 0
    codes: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.create_time = psutil.Process(self.pid).create_time()
        self.baseline_rss = self.peak_rss = tree_rss(self.pid)

    def check_alive(self, what: str) -> None:
        try:
            proc = psutil.Process(self.pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            same = proc.create_time() == self.create_time
        except psutil.NoSuchProcess:
            alive = same = False
        assert alive and same, f"the server (pid {self.pid}) died or was replaced after {what}"
        self.peak_rss = max(self.peak_rss, tree_rss(self.pid))


class HttpProbe:
    """One keep-alive connection; reconnects only when the server announced ``Connection: close``."""

    def __init__(self, url: str, model: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.model = host, int(port), model
        self.conn = self._connect()
        self.closed = False  # the deployment refuses HTTP inference (403: served over gRPC only)

    def detect_closed_inference(self) -> bool:
        """Whether a good inference is refused with a 403 that says to use gRPC (the triton runtime may)."""
        self.conn.request("POST", f"/v2/models/{self.model}/infer", body=GOOD_JSON,
                          headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        body = response.read()
        self.closed = response.status == 403 and b"grpc" in body.lower()
        assert response.status == 200 or self.closed, (response.status, body[:300])
        return self.closed

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def send(self, case: HttpCase) -> tuple[int, bytes]:
        headers = {}
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
        if case.header_length is not None:
            headers["Inference-Header-Content-Length"] = case.header_length
        try:
            self.conn.request("POST", case.path.format(m=self.model), body=case.body, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except (ConnectionError, http.client.HTTPException) as exc:
            raise AssertionError(f"the server dropped the connection on {case.describe()}: {exc!r}") from None
        if (response.getheader("connection") or "").lower() == "close":
            self.conn.close()
            self.conn = self._connect()
        return response.status, body

    def good(self, after: str) -> None:
        try:
            self.conn.request("POST", f"/v2/models/{self.model}/infer", body=GOOD_JSON,
                              headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            body = response.read()
        except (ConnectionError, http.client.HTTPException) as exc:
            raise AssertionError(f"the connection was dropped after {after}: the next request got {exc!r}") from None
        if self.closed:
            assert response.status == 403 and b"grpc" in body.lower(), (response.status, body[:300])
            return
        assert response.status == 200, f"a good request after {after} got {response.status}: {body[:300]!r}"


def check_http_answer(case: HttpCase, status: int, body: bytes, *, triton: bool = False) -> str:
    """Checks one answer; returns how to count it (the status, or ``"500 (Triton front end)"``)."""
    error = None
    if status >= 400:
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        assert isinstance(error, str) and error, f"{status} without a JSON error message: {body[:300]!r}"
    if triton and status == 500 and TRITON_FRONTEND_JSON_500.match(error or ""):
        return "500 (Triton front end)"
    assert status < 500, f"{status} for a client's request: {case.describe()}\n-> {body[:500]!r}"
    return str(status)


def check_grpc_answer(request: pb.ModelInferRequest, code: grpc.StatusCode, details: str) -> None:
    assert code not in GRPC_FAILURES, f"{code.name} for a client's request: {request}\n-> {details[:500]}"
