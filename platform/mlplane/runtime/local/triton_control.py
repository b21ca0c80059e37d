"""Switching a running tritonserver's model version over V2 gRPC (``RepositoryModelLoad``).

Why gRPC: Triton's model-repository calls are synchronous. Over HTTP, the load occupies one of the
HTTP front end's event-loop threads for as long as the new version takes to load (the Python-backend
stub starting, the MLflow model loading: seconds), and every client connection served by that thread
stalls until it is done — measured: HTTP clients stalled 9-10 s, some past a 10 s timeout, during a
promote (issue 13, finding 5). Over gRPC the load runs on the gRPC server's own threads and neither
HTTP nor gRPC clients notice it (see bench/triton_promote.py).

The request is encoded by hand (one string field) so this module needs grpcio only, not the
``inference.*`` protobuf modules that tritonclient and kserve both define (they cannot share a process).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import httpx

__all__ = ["REPOSITORY_MODEL_LOAD", "grpc_model_load", "model_load_request"]

#: The V2 gRPC method (``inference.GRPCInferenceService``) that loads or reloads a model.
REPOSITORY_MODEL_LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"


def model_load_request(model: str) -> bytes:
    """A serialized ``RepositoryModelLoadRequest{model_name: model}`` (field 2, length-delimited)."""
    name = model.encode()
    length = len(name)
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x12" + bytes(varint) + name


async def grpc_model_load(target: str, model: str, metadata: Mapping[str, str], timeout: float) -> httpx.Response:
    """Ask the Triton at ``target`` (host:port) to load ``model``; its answer as an HTTP-style response.

    200 when loaded; 400 with ``{"error": ...}`` when Triton refuses (the model does not load, the
    control key is wrong). Raises :class:`httpx.TransportError` when Triton does not answer at all,
    like the HTTP path does.
    """
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(REPOSITORY_MODEL_LOAD)  # no serializers: bytes in, bytes out
        try:
            await call(model_load_request(model), metadata=tuple(metadata.items()), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                    and "restricted" not in (exc.details() or ""):
                raise httpx.TransportError(f"gRPC {exc.code().name}: {exc.details()}") from None
            return httpx.Response(400, json={"error": f"{exc.details()} (gRPC {exc.code().name})"})
    return httpx.Response(200, json={})
