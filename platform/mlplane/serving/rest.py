"""The V2 REST inference path of mlplane's kserve server: request decoding and the routes mlplane answers.

The body is read raw and parsed once, strictly (:mod:`mlplane.serving.protocol`: datatypes, shapes, byte size
against ``--max-request-bytes``, nesting depth, values that fit their datatype), with no pydantic pass; the
binary tensor extension keeps ``np.frombuffer`` views. ``V2Routes`` answers ``/v2/models/{m}/infer`` and
the versioned routes (``/versions/{v}``, ``.../ready``, ``.../infer``) that kserve 0.21 answers with 501:
the served version works, any other is a 404. Responses carry no ``null`` fields; a Content-Type that is
neither JSON nor the binary extension's is a 415.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse, Response
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from mlplane.core.signature import SignatureError, split_binary_request

from .model import check_version
from .protocol import MAX_JSON_DEPTH, RequestTooLarge, check_tensor, json_tensor, parse_json, parse_request

__all__ = ["ACCEPTED_CONTENT_TYPES", "V2Routes", "binary_infer_request", "json_infer_request"]

log = logging.getLogger("mlplane.serving")


# --------------------------------------------------------------------------------------------
# Binary tensor extension without per-element Python work
# --------------------------------------------------------------------------------------------
class _ArrayInput(InferInput):
    """An input whose tensor is already decoded (a read-only view of the request body)."""

    def __init__(self, name: str, shape: list[int], datatype: str, array: Any, parameters: Any) -> None:
        super().__init__(name=name, shape=shape, datatype=datatype, parameters=parameters)
        self._array = array

    def as_numpy(self) -> Any:
        return self._array


class _JsonArrayInput(InferInput):
    """A numeric input sent as JSON ``data``: checked and turned into an ndarray once, when the model reads it
    (after the decoder has checked its name, datatype and shape against the signature)."""

    def __init__(self, name: str, shape: list[int], datatype: str, count: int, data: Any, parameters: Any) -> None:
        super().__init__(name=name, shape=shape, datatype=datatype, parameters=parameters)
        self._json, self._count = data, count
        self._array: np.ndarray | None = None

    def as_numpy(self) -> Any:
        if self._array is None:
            self._array = json_tensor(self.name, self.datatype, self.shape, self._count, self._json)
        return self._array


def binary_infer_request(body: bytes, json_length: str | int, model_name: str, max_bytes: int) -> InferRequest:
    """kserve's ``InferRequest.from_bytes`` turns every binary input into a Python list (and the
    decoder turns it back); this keeps ``np.frombuffer`` views. BYTES inputs keep kserve's decoding.
    Raises :class:`SignatureError` (400) or :class:`RequestTooLarge` (413)."""
    try:
        length = int(json_length)
    except ValueError:
        raise SignatureError(f"bad {INFERENCE_CONTENT_LENGTH_HEADER} header: {json_length!r}") from None
    if length > len(body) or length < 0:
        raise SignatureError(f"{INFERENCE_CONTENT_LENGTH_HEADER} is {length}, but the body has {len(body)} bytes")
    try:
        header, tensors = split_binary_request(body, length)
    except SignatureError as exc:
        if "depth limit" in str(exc):
            raise RequestTooLarge(f"the request's JSON header is nested more than {MAX_JSON_DEPTH} levels deep") \
                from None
        raise
    inputs: list[InferInput] = []
    used = 0
    for spec, tensor in zip(header["inputs"], tensors, strict=True):
        name, shape, datatype, params = spec["name"], spec["shape"], spec.get("datatype"), spec.get("parameters")
        count, size = check_tensor(name, datatype, shape, max_bytes, used)
        used += size
        if params is not None and not isinstance(params, dict):
            raise SignatureError(f"malformed request: input {name!r}: parameters must be an object")
        if tensor is None:
            if datatype == "FP16":
                raise SignatureError(f"input {name!r}: FP16 data travels only in binary, not as JSON data")
            if datatype == "BYTES":
                inputs.append(InferInput(name=name, shape=shape, datatype=datatype, data=spec["data"],
                                         parameters=params))
            else:
                inputs.append(_JsonArrayInput(name, shape, datatype, count, spec["data"], params))
        elif isinstance(tensor, bytes):
            inp = InferInput(name=name, shape=shape, datatype=datatype, parameters=params)
            inp._raw_data = tensor
            inputs.append(inp)
        else:
            inputs.append(_ArrayInput(name, shape, datatype, tensor, params))
    outputs = header.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise SignatureError("malformed request: outputs must be a list of objects with a string name")
    requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in outputs] if outputs else None
    return InferRequest(
        model_name=model_name,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        infer_inputs=inputs,
        request_outputs=requested,
    )


def json_infer_request(body: bytes, model_name: str, max_bytes: int) -> InferRequest:
    """A V2 JSON request, parsed strictly and checked (:mod:`mlplane.serving.protocol`) before any tensor is
    built; numeric ``data`` becomes an ndarray once, when the model reads it."""
    req = parse_request(parse_json(body), max_bytes)
    inputs: list[InferInput] = []
    for inp in req.inputs:
        if inp.datatype == "BYTES":
            inputs.append(InferInput(name=inp.name, shape=inp.shape, datatype=inp.datatype, data=inp.data,
                                     parameters=inp.parameters or {}))
        else:
            inputs.append(_JsonArrayInput(inp.name, inp.shape, inp.datatype, inp.count, inp.data,
                                          inp.parameters or {}))
    requested = [RequestedOutput(name=n, parameters=p or {}) for n, p in req.outputs] if req.outputs else None
    return InferRequest(model_name=model_name, request_id=req.id, parameters=req.parameters, infer_inputs=inputs,
                        request_outputs=requested)


# --------------------------------------------------------------------------------------------
# The V2 REST routes mlplane answers itself: infer (plain and versioned), versioned metadata/ready
# --------------------------------------------------------------------------------------------
#: Media types an inference request may declare (none at all is fine too: tritonclient sends none).
ACCEPTED_CONTENT_TYPES = ("application/json", "application/octet-stream")


def _content_type_refused(request: Request) -> ORJSONResponse | None:
    value = request.headers.get("content-type")
    if value is None:
        return None
    media = value.split(";", 1)[0].strip().lower()
    if media in ACCEPTED_CONTENT_TYPES or media.endswith("+json"):
        return None
    return ORJSONResponse(status_code=415, content={
        "error": f"unsupported Content-Type {value!r}: send V2 inference requests as application/json "
                 "(or application/octet-stream with the binary tensor extension)"})


def _too_large(exc: Exception) -> ORJSONResponse:
    log.warning("request over the limits: %s", exc)
    return ORJSONResponse(status_code=413, content={"error": str(exc)})


class V2Routes:
    """The inference route (and the versioned model routes kserve 0.21 answers with 501).

    The body is read raw and parsed strictly once (no pydantic pass); responses carry no ``null`` fields.
    """

    def __init__(self, dataplane: DataPlane, max_bytes: int) -> None:
        self.dataplane = dataplane
        self.max_bytes = max_bytes

    def _model(self, model_name: str, model_version: str | None) -> Any:
        model = self.dataplane.get_model_from_registry(model_name)  # ModelNotFound -> 404
        check_version(model, model_name, model_version)
        return model

    async def metadata(self, model_name: str, model_version: str) -> ORJSONResponse:
        self._model(model_name, model_version)
        return ORJSONResponse(await self.dataplane.model_metadata(model_name))

    async def ready(self, model_name: str, model_version: str) -> ORJSONResponse:
        model = self._model(model_name, model_version)
        if not model.ready:
            raise ModelNotReady(model_name)
        return ORJSONResponse({"name": model_name, "ready": True})

    async def infer(self, request: Request, model_name: str, model_version: str | None = None) -> Response:
        refused = _content_type_refused(request)
        if refused is not None:
            return refused
        model = self._model(model_name, model_version)
        if not model.ready:
            raise ModelNotReady(model_name)
        body = await request.body()
        headers = dict(request.headers)
        try:
            json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
            if json_length is not None:
                infer_request = binary_infer_request(body, json_length, model_name, self.max_bytes)
            else:
                infer_request = json_infer_request(body, model_name, self.max_bytes)
        except RequestTooLarge as exc:
            return _too_large(exc)
        except SignatureError as exc:
            raise InvalidInput(str(exc)) from None
        response, response_headers = await model(infer_request, headers=headers)
        response, encode_headers = self.dataplane.encode(model_name=model_name, response=response, headers=headers,
                                                         req_attributes={})
        response_headers.update(encode_headers)
        response_headers.pop("content-length", None)
        if isinstance(response, bytes):
            response_headers.setdefault("content-type", "application/octet-stream")
            return Response(response, headers=response_headers)
        response_headers.pop("content-type", None)
        return ORJSONResponse(response, headers=response_headers or None)

    def register(self, app: FastAPI) -> None:
        """Add these routes; registered before kserve's, they answer these paths (routes match in order)."""
        routes = (
            ("/v2/models/{model_name}/infer", "POST", self.infer),
            ("/v2/models/{model_name}/versions/{model_version}/infer", "POST", self.infer),
            ("/v2/models/{model_name}/versions/{model_version}", "GET", self.metadata),
            ("/v2/models/{model_name}/versions/{model_version}/ready", "GET", self.ready),
        )
        for path, method, endpoint in routes:
            app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
