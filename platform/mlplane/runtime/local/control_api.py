"""The local supervisor's control API: a small HTTP API on its Unix socket (the CLI is the client).

Routes (every body JSON unless said otherwise)::

    GET    /v1/ping                          → {"pid": <supervisor pid>}
    PUT    /v1/deployments/{name}            body: the ModelDeployment as YAML (Content-Type: application/yaml);
                                             header X-Mlplane-Source: where it came from (percent-encoded
                                             UTF-8), named in spec errors
    DELETE /v1/deployments/{name}
    POST   /v1/deployments/{name}/promote    body: {"version": "3"}
    POST   /v1/shutdown                      → {"stopping": true}

Success is 200 with the operation's result. Every error, whatever raised it, is one shape::

    {"error": "<message for the user>", "exitCode": <the CLI exit code: 2 bad input, 1 runtime failure>}

with its HTTP status chosen in one place, :func:`error_reply`:

- a spec the loader refuses, or a body that is not what the route takes: 400, exit code 2;
- the supervisor's ``OperationError``: its ``status`` (components.py: 404 for ``NotFound``, no deployment of
  that name; 400 for ``code == 2``, the request is wrong; 409 otherwise, the platform could not carry it out
  in its current state: MLflow did not answer, a model server did not start, ...), and for an error without
  one 400 for ``code == 2`` and 500 otherwise; the exit code is the error's ``code``;
- an unknown route or method: 404 / 405, exit code 2;
- anything else (a bug): 500 with ``"<Type>: <message>"``, exit code 1, logged with its traceback; the
  server goes on serving.

The socket is created here, mode 0600 before it listens (only the owner of the state dir can reach the
supervisor). uvicorn serves it in the caller's event loop and leaves the signals to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlplane.runtime.local.components import OperationError
from mlplane.serving.control import bind_control_socket
from mlplane.spec import ModelDeployment, SpecError, load_text

log = logging.getLogger("mlplane.supervisor.control")

SOURCE_HEADER = "X-Mlplane-Source"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain",
                        "application/json"})  # JSON is YAML


class ControlOps(Protocol):
    """What the control API drives: the supervisor implements it."""

    async def deploy(self, dep: ModelDeployment) -> dict[str, Any]: ...

    async def undeploy(self, name: str) -> dict[str, Any]: ...

    async def promote(self, name: str, version: str) -> dict[str, Any]: ...

    def request_shutdown(self) -> None: ...


class BadRequest(Exception):
    """The request itself is wrong (its body, its content type): 400, exit code 2."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def error_reply(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The one error model: (HTTP status, ``{"error", "exitCode"}``) for anything a request raised."""
    if isinstance(exc, SpecError):
        return 400, {"error": str(exc), "exitCode": 2}
    if isinstance(exc, BadRequest):
        return exc.status, {"error": str(exc), "exitCode": 2}
    if isinstance(exc, OperationError):
        status = getattr(exc, "status", None)
        if not isinstance(status, int) or not 400 <= status <= 599:
            status = 400 if exc.code == 2 else 500
        return status, {"error": str(exc), "exitCode": exc.code}
    if isinstance(exc, HTTPException):
        return exc.status_code, {"error": str(exc.detail), "exitCode": 2 if exc.status_code < 500 else 1}
    return 500, {"error": f"{type(exc).__name__}: {exc}", "exitCode": 1}


def _error_response(exc: Exception) -> JSONResponse:
    status, body = error_reply(exc)
    headers = getattr(exc, "headers", None) if isinstance(exc, HTTPException) else None  # e.g. 405's Allow
    return JSONResponse(body, status_code=status, headers=headers)


Endpoint = Callable[[Request], Awaitable[Any]]


def _endpoint(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """A route: the result as JSON with 200, or the error model; one failed request never stops the server."""

    async def handle(request: Request) -> Response:
        try:
            return JSONResponse(await fn(request))
        except (SpecError, BadRequest, OperationError) as exc:
            return _error_response(exc)
        except Exception as exc:  # a bug: reported, logged, and the server keeps serving
            log.exception("control request %s %s failed", request.method, request.url.path)
            return _error_response(exc)

    return handle


async def _route_error(request: Request, exc: Exception) -> Response:
    """An unknown route or method: most likely a CLI and a supervisor from different mlplane versions."""
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        exc = HTTPException(exc.status_code, f"{request.method} {request.url.path}: {exc.detail} in the control "
                            "API; is the running platform from another mlplane version? Restart it with "
                            "`mlplane down` and `mlplane up`", headers=exc.headers)
    return _error_response(exc)


def parse_deployment(name: str, text: str, source: str) -> ModelDeployment:
    """The body of ``PUT /v1/deployments/{name}``: exactly one ModelDeployment, named ``name``."""
    resources = load_text(text, source=source)
    if len(resources) != 1 or not isinstance(resources[0], ModelDeployment):
        found = ", ".join(r.kind for r in resources)
        raise BadRequest(f"{source}: the body must be exactly one ModelDeployment; found {found}")
    dep = resources[0]
    if dep.metadata.name != name:
        raise BadRequest(f"{source}: metadata.name is '{dep.metadata.name}' but the request is for "
                         f"deployment '{name}'; they must be the same")
    return dep


def parse_promote(raw: bytes) -> str:
    """The body of ``POST .../promote``: ``{"version": "3"}`` (a JSON number is taken too)."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc}); expected {{\"version\": \"3\"}}") from None
    if not isinstance(body, dict) or "version" not in body:
        raise BadRequest("version: required; expected a body like {\"version\": \"3\"}")
    version = body["version"]
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise BadRequest(f"version: got {version!r}; expected a registry version such as \"3\"")
    return str(version)


def make_app(ops: ControlOps) -> Starlette:
    """The control API over ``ops`` (see the module docstring for routes and errors)."""

    async def ping(request: Request) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def put_deployment(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "application/yaml").split(";")[0].strip().lower()
        if content_type not in YAML_TYPES:
            raise BadRequest(f"Content-Type {content_type!r}: send the ModelDeployment as application/yaml",
                             status=415)
        try:
            text = (await request.body()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the body is not UTF-8 text ({exc})") from None
        source = unquote(request.headers.get(SOURCE_HEADER, "")) or "<request>"
        return await ops.deploy(parse_deployment(request.path_params["name"], text, source))

    async def delete_deployment(request: Request) -> dict[str, Any]:
        return await ops.undeploy(request.path_params["name"])

    async def promote(request: Request) -> dict[str, Any]:
        return await ops.promote(request.path_params["name"], parse_promote(await request.body()))

    async def shutdown(request: Request) -> dict[str, Any]:
        ops.request_shutdown()
        return {"stopping": True}

    routes = [
        Route("/v1/ping", _endpoint(ping), methods=["GET"]),
        Route("/v1/deployments/{name}", _endpoint(put_deployment), methods=["PUT"]),
        Route("/v1/deployments/{name}", _endpoint(delete_deployment), methods=["DELETE"]),
        Route("/v1/deployments/{name}/promote", _endpoint(promote), methods=["POST"]),
        Route("/v1/shutdown", _endpoint(shutdown), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _route_error})


class _Server(uvicorn.Server):
    """uvicorn inside the supervisor's loop: the supervisor owns SIGTERM/SIGINT (uvicorn would replace them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_private_socket(path: Path) -> socket.socket:
    """The supervisor's socket: bound and mode 0600 *before* it listens, in a 0700 directory of this user's
    (:func:`mlplane.serving.control.bind_control_socket`, the model servers' control sockets too). A socket
    file left by a supervisor that is gone is replaced; anything else there is refused."""
    try:
        return bind_control_socket(path, what="the supervisor's socket")
    except ValueError as exc:
        raise OperationError(str(exc)) from None


class ControlServer:
    """The control API served on a Unix socket in the running event loop: ``await start()``, ``await stop()``.

    ``grace_s``: how long ``stop()`` lets requests in flight finish before they are cancelled.
    """

    def __init__(self, app: Starlette, socket_path: Path, grace_s: int = 5):
        self.socket_path = socket_path
        self._server = _Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off",
                                              access_log=False, timeout_graceful_shutdown=grace_s))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = bind_private_socket(self.socket_path)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="mlplane-control-api")
        while not self._server.started:
            if self._task.done():  # failed to start: its exception, not a wait forever
                sock.close()
                await self._task
                raise OperationError(f"the control API on {self.socket_path} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace_s``), remove the socket file."""
        try:
            if self._task is not None:
                self._server.should_exit = True
                await self._task
        finally:
            self._task = None
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


async def serve(app: Starlette, socket_path: Path, grace_s: int = 5) -> ControlServer:
    """Start serving ``app`` on ``socket_path`` (mode 0600) in the running loop; ``await server.stop()`` ends it."""
    server = ControlServer(app, socket_path, grace_s=grace_s)
    await server.start()
    return server
