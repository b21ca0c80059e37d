"""A ``grpc.aio`` server interceptor that requires an API key in the call metadata."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from mlplane.auth.guard import Authenticator, AuthError, RateLimited, credential

__all__ = ["V2_PUBLIC_METHODS", "ApiKeyInterceptor"]

log = logging.getLogger("mlplane.auth")

#: gRPC methods that stay open with auth on: liveness and readiness.
V2_PUBLIC_METHODS = frozenset(
    f"/inference.GRPCInferenceService/{m}" for m in ("ServerLive", "ServerReady", "ModelReady")
)


class ApiKeyInterceptor(aio.ServerInterceptor):
    """``UNAUTHENTICATED`` without a valid key in the ``authorization: Bearer <key>`` or ``x-api-key``
    metadata, ``RESOURCE_EXHAUSTED`` (with a ``retry-after`` trailer, in seconds) over the key's rate limit.
    """

    def __init__(self, authenticator: Authenticator, public: frozenset[str] = V2_PUBLIC_METHODS) -> None:
        self.authenticator = authenticator
        self.public = public

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in self.public:
            return handler
        metadata = dict(details.invocation_metadata or ())
        try:
            await self.authenticator.authenticate(credential(metadata.get("authorization"), metadata.get("x-api-key")))
        except AuthError as exc:
            log.info("grpc %s refused (%d): key id %s", details.method, exc.status, exc.key_id or "-")
            return _denied(handler, exc)
        return handler


def _denied(handler: grpc.RpcMethodHandler, exc: AuthError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts the call with ``exc``'s status."""

    async def deny(_request: Any, context: aio.ServicerContext) -> None:
        if isinstance(exc, RateLimited):
            context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)

    codec = {"request_deserializer": handler.request_deserializer,
             "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codec)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codec)
    return grpc.stream_stream_rpc_method_handler(deny, **codec)
