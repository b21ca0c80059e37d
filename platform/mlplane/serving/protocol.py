"""Open Inference Protocol (KServe V2) request checks that run before any tensor is allocated.

Pure code: no kserve import, no I/O. The kserve runtime's HTTP and gRPC front ends call these on every
request, so each check is a few comparisons or one vectorised numpy call:

* datatypes exactly as the protocol spells them (``"FP64"``; ``"fp64"`` is refused with a hint);
* shapes are lists of non-negative integers (``true`` is not an integer here, ``-1`` is not a size);
* the bytes a tensor's shape and datatype declare are checked against the server's request limit
  before anything is allocated (:class:`RequestTooLarge`: HTTP 413, gRPC ``RESOURCE_EXHAUSTED``);
* JSON is parsed strictly (orjson): ``NaN``/``Infinity`` are not JSON numbers and a number beyond FP64's
  range is refused, nesting deeper than :data:`MAX_JSON_DEPTH` is a :class:`RequestTooLarge`;
* JSON ``data`` must hold values of the declared datatype: ``null``, strings or booleans in a numeric
  tensor, non-integers or out-of-range integers in an integer tensor, and numbers that overflow FP32 or
  FP16 are refused naming the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson

from mlplane.core.signature import SignatureError, v2_to_numpy

__all__ = [
    "DATATYPES",
    "MAX_JSON_DEPTH",
    "JsonInput",
    "JsonRequest",
    "RequestTooLarge",
    "check_tensor",
    "json_tensor",
    "parse_json",
    "parse_request",
]

#: The datatypes of the protocol's tensor data types table, spelled as it spells them.
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
     "BYTES"}
)
#: orjson's own nesting limit; deeper documents are refused before they are built.
MAX_JSON_DEPTH = 1024
_NAME_BEFORE = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.){1,200})"')


class RequestTooLarge(SignatureError):
    """A request over the server's limits (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


def check_tensor(name: str, datatype: Any, shape: Any, max_bytes: int, used: int = 0) -> tuple[int, int]:
    """Validate one tensor's datatype and shape; returns its element count and byte size.

    Raises :class:`SignatureError` for a datatype the protocol does not spell so or a shape that is not
    a list of non-negative integers, :class:`RequestTooLarge` when shape x datatype size, plus the
    ``used`` bytes of the request's earlier tensors, exceeds ``max_bytes`` (computed with Python
    integers: no overflow, nothing allocated). BYTES elements count one byte each.
    """
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        hint = ""
        if isinstance(datatype, str) and datatype.upper() in DATATYPES:
            hint = f" (datatypes are case-sensitive: write {datatype.upper()!r})"
        raise SignatureError(
            f"input {name!r}: unknown datatype {datatype!r}{hint}; expected one of {', '.join(sorted(DATATYPES))}"
        )
    if not isinstance(shape, list | tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise SignatureError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    count = 1
    for d in shape:
        count *= d
    size = count * (1 if datatype == "BYTES" else v2_to_numpy(datatype).itemsize)
    if size + used > max_bytes:
        others = f" (with the {used} bytes of the other inputs)" if used else ""
        raise RequestTooLarge(
            f"input {name!r}: shape {list(shape)} of {datatype} is {size} bytes{others}, more than the server's "
            f"limit of {max_bytes} bytes (serving.maxRequestBytes); send smaller batches"
        )
    return count, size


def parse_json(body: bytes) -> Any:
    """Strict JSON (orjson); a parse error names the input it happened in when it can tell."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        where = ""
        found = _NAME_BEFORE.findall(body[: max(exc.pos, 0)])
        if found:
            where = f" in input {found[-1].decode('utf-8', 'replace')!r}"
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise RequestTooLarge(
                f"the request's JSON is nested more than {MAX_JSON_DEPTH} levels deep{where}"
            ) from None
        detail = str(exc)
        if "infinity" in detail or "expected a JSON value" in detail:
            detail += "; NaN, Infinity and numbers beyond FP64's range are not JSON numbers"
        raise SignatureError(f"malformed request: the body is not valid JSON{where} ({detail})") from None


_KINDS = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans", "U": "strings", "S": "strings",
          "O": "mixed or out-of-range values (or null)"}


def json_tensor(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    """The ndarray of a JSON ``data`` field (flat or nested, row-major) for a non-BYTES tensor."""
    if not isinstance(data, list):
        raise SignatureError(f"input {name!r}: data must be a JSON array, got {type(data).__name__}")
    want = v2_to_numpy(datatype)
    try:
        raw = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise SignatureError(f"input {name!r}: data is not a regular array of {datatype} values ({exc})") from None
    kind = raw.dtype.kind
    if raw.size:
        if want.kind == "b":
            ok = kind == "b"
        elif want.kind == "f":
            ok = kind in "iuf"
        else:
            ok = kind in "iu"
        if not ok:
            got = _KINDS.get(kind, str(raw.dtype))
            if kind == "O" and any(v is None for v in raw.ravel()):
                got = "null, which is not a value"
            if kind == "f" and want.kind in "iu":
                got = "numbers that are not integers (or integers out of range)"
            raise SignatureError(f"input {name!r}: {datatype} data holds {got}")
        if want.kind in "iu":
            info = np.iinfo(want)
            if raw.min() < info.min or raw.max() > info.max:
                raise SignatureError(
                    f"input {name!r}: a value is out of {datatype}'s range [{info.min}, {info.max}]"
                )
    if raw.size != count:
        raise SignatureError(
            f"input {name!r} has shape {list(shape)} ({count} values) but its data holds {raw.size} values"
        )
    with np.errstate(over="ignore"):
        arr = raw.astype(want, copy=False).reshape(shape)
    if want.kind == "f" and not np.isfinite(arr).all():
        raise SignatureError(f"input {name!r}: a value is out of {datatype}'s range (it would be infinite)")
    return arr


@dataclass(frozen=True)
class JsonInput:
    """One checked input; ``data`` is the JSON value (turned into an ndarray by :func:`json_tensor` when the
    model reads it, after its shape has been checked against the signature)."""

    name: str
    datatype: str
    shape: list[int]
    count: int
    parameters: dict[str, Any] | None
    data: Any


@dataclass(frozen=True)
class JsonRequest:
    id: str | None
    parameters: dict[str, Any] | None
    inputs: list[JsonInput]
    outputs: list[tuple[str, dict[str, Any] | None]] | None


def _parameters(value: Any, where: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise SignatureError(f"malformed request: {where}parameters must be an object, got {type(value).__name__}")


def parse_request(doc: Any, max_bytes: int) -> JsonRequest:
    """A whole V2 JSON inference request (the document ``parse_json`` returned)."""
    if not isinstance(doc, dict):
        raise SignatureError("malformed request: the body must be a JSON object with an \"inputs\" list")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise SignatureError('malformed request: "inputs" is required and must be a non-empty list of tensors')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise SignatureError("malformed request: id must be a string")
    parsed: list[JsonInput] = []
    total = 0
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise SignatureError(f"malformed request: inputs[{i}] must be an object with a string name")
        name = inp["name"]
        datatype, shape = inp.get("datatype"), inp.get("shape")
        count, size = check_tensor(name, datatype, shape, max_bytes, total)
        total += size
        params = _parameters(inp.get("parameters"), f"input {name!r}: ")
        if "data" not in inp:
            raise SignatureError(f"input {name!r} has no data")
        data = inp["data"]
        if not isinstance(data, list):
            raise SignatureError(f"input {name!r}: data must be a JSON array, got {type(data).__name__}")
        # check_tensor passed: datatype is one of DATATYPES, shape (parsed JSON: a list) non-negative ints
        parsed.append(JsonInput(name, cast(str, datatype), cast(list[int], shape), count, params, data))
    outputs = doc.get("outputs")
    requested = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise SignatureError("malformed request: outputs must be a list of objects with a string name")
        requested = [(o["name"], _parameters(o.get("parameters"), f"output {o['name']!r}: ")) for o in outputs]
    return JsonRequest(request_id, _parameters(doc.get("parameters"), ""), parsed, requested)
