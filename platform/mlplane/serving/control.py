"""Model control apart from the data plane, without kserve: what counts as a model-control request, the
refusals on the public HTTP and gRPC ports, and the private Unix socket the supervisor's requests use.

Clients never load, unload or switch models: every V2 model-repository path on the public HTTP port
answers 403 and the gRPC ``Repository*`` RPCs ``PERMISSION_DENIED``, whatever key the call carries. The
local supervisor reaches a separate listener on a Unix socket (mode 0600 in a 0700 directory); in the
cluster no control listener exists (KServe rolls pods to change versions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import grpc
from fastapi.responses import ORJSONResponse
from grpc import aio

__all__ = ["CONTROL_REFUSED", "ControlRefusalInterceptor", "ControlRefusalMiddleware", "bind_control_socket",
           "is_control_path"]

log = logging.getLogger("mlplane.serving")

CONTROL_REFUSED = ("model control is not available to clients: only mlplane loads, unloads and switches "
                   "models (use `mlplane promote` or `mlplane deploy`)")
_REPOSITORY_PATH = "/v2/repository"
_GRPC_REPOSITORY_PREFIX = "/inference.GRPCInferenceService/Repository"


def is_control_path(path: str) -> bool:
    """Whether an HTTP path is (a spelling of) a V2 model-repository path: ``//V2/repository/...`` is one."""
    normal = "/" + "/".join(part for part in path.split("/") if part)
    normal = normal.lower()
    return normal == _REPOSITORY_PATH or normal.startswith(_REPOSITORY_PATH + "/")


class ControlRefusalMiddleware:
    """Pure ASGI: 403 with a JSON message for every model-repository path, before anything else runs."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_control_path(scope.get("path", "")):
            log.warning("refused model control from a client: %s %r", scope.get("method"), scope.get("path"))
            await ORJSONResponse(status_code=403, content={"error": CONTROL_REFUSED})(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ControlRefusalInterceptor(aio.ServerInterceptor):
    """``PERMISSION_DENIED`` for the gRPC ``Repository*`` RPCs, outermost: whatever key the call carries."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(_GRPC_REPOSITORY_PREFIX):
            return handler
        log.warning("refused model control from a gRPC client: %s", details.method)

        async def deny(_request: Any, context: aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROL_REFUSED)

        return grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def bind_control_socket(path: Path, what: str = "--control-socket") -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 before it listens, in a directory of this user's with
    mode 0700 (no moment when another user could connect). Also the local supervisor's control socket.

    A stale socket from an earlier run is replaced; anything else at ``path``, a parent directory that
    is a symlink or belongs to another user is refused (``ValueError`` naming ``what`` and the path).
    """
    if len(os.fsencode(path)) > 107:
        raise ValueError(f"{what}: {path} is longer than a Unix socket path may be (107 bytes)")
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(parent)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ValueError(f"{what}: {parent} must be a directory of this user's (not a symlink)")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ValueError(f"{what}: {path} exists and is not a socket; remove it or choose another path")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
