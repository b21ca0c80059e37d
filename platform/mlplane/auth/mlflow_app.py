"""MLflow behind HTTP basic auth: the MLflow server app ``mlflow server --app-name mlplane-auth``.

An MLflow app plugin (entry point group ``mlflow.app``, MLflow's mechanism for custom authentication):
``mlflow server`` runs it exactly as it runs its own app, with every store, artifact and host option
unchanged; this factory wraps MLflow's ASGI app so that every request but ``GET /health`` carries
``Authorization: Basic`` credentials of a known user:

- the admin (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``, MLflow's own names for its
  basic-auth app's admin): reads and writes everything;
- optionally a reader (``MLPLANE_MLFLOW_READER_USERNAME`` / ``MLPLANE_MLFLOW_READER_PASSWORD``): ``GET``
  and ``HEAD`` only, e.g. for KServe's storage initializer downloading proxied artifacts;
- optionally a writer (``MLPLANE_MLFLOW_WRITER_USERNAME`` / ``MLPLANE_MLFLOW_WRITER_PASSWORD``), e.g. for
  ingestion Jobs and training jobs: everything the reader may, and the writes of logging and registering
  (:data:`WRITER_CALLS`): create experiments and runs, log params, metrics, tags, inputs and logged models,
  upload artifacts, create registered models and model versions, set aliases. Nothing that deletes,
  renames, restores or moves stages, no webhooks, gateway, workspaces or scorers, and no user or
  permission management: those are the admin's.

No credentials: ``401`` with ``WWW-Authenticate: Basic realm="mlflow"``; a reader that writes or a writer
beyond its calls: ``403``; both with MLflow's JSON error body. The comparison is constant-time; passwords
never reach a log.

MLflow's own ``basic-auth`` app (users and permissions in a database) needs the ``mlflow[auth]`` extra
(Flask-WTF), which mlplane's lock does not include; this app needs nothing beyond MLflow.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["APP_NAME", "WRITER_CALLS", "BasicAuthApp", "Role", "User", "create_app", "may", "users_from_env"]

APP_NAME = "mlplane-auth"
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
READER_USERNAME_ENV = "MLPLANE_MLFLOW_READER_USERNAME"
READER_PASSWORD_ENV = "MLPLANE_MLFLOW_READER_PASSWORD"
WRITER_USERNAME_ENV = "MLPLANE_MLFLOW_WRITER_USERNAME"
WRITER_PASSWORD_ENV = "MLPLANE_MLFLOW_WRITER_PASSWORD"
MIN_PASSWORD_LENGTH = 12  # as MLflow's basic-auth app requires
OPEN_PATHS = frozenset({"/health"})  # probes (kubelet, supervisor) need no credentials
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


Role = Literal["admin", "writer", "reader"]

_API = r"/(?:ajax-)?api/2\.0/mlflow"
_ARTIFACTS = r"/(?:ajax-)?api/2\.0/mlflow-artifacts"
#: What the writer may call besides reads (``GET``, ``HEAD``, ``OPTIONS``): (method, full-path pattern).
#: What MLflow's client sends to log a run with params, metrics, tags, inputs and models (MLflow 3's logged
#: models, artifacts through the server's proxy, multipart too), register a model version and set an alias
#: (``mlplane_pipelines.ingest``, ``mlplane.registry.register_model``), and the searches MLflow sends as POST.
WRITER_CALLS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((method, re.compile(pattern)) for method, pattern in (
    ("POST", rf"{_API}/experiments/(?:create|search|set-experiment-tag)"),
    ("POST", rf"{_API}/runs/(?:create|update|search|set-tag|log-batch|log-metric|log-parameter|log-inputs"
             r"|log-model|outputs)"),
    ("POST", rf"{_API}/logged-models(?:/search|/[^/]+/params)?"),
    ("PATCH", rf"{_API}/logged-models/[^/]+(?:/tags)?"),
    ("PUT", rf"{_ARTIFACTS}/artifacts/.+"),
    ("POST", rf"{_ARTIFACTS}/mpu/(?:create|complete|abort)/.+"),
    ("POST", rf"{_API}/registered-models/(?:create|alias|get-latest-versions)"),
    ("POST", rf"{_API}/model-versions/create"),
))


def may(role: Role, method: str, path: str) -> bool:
    """Whether a user of ``role`` may make the HTTP call ``method path`` (websockets: the admin only)."""
    if role == "admin":
        return True
    if method in READ_METHODS:
        return True
    return role == "writer" and any(m == method and p.fullmatch(path) for m, p in WRITER_CALLS)


@dataclass(frozen=True)
class User:
    username: str
    password: bytes = field(repr=False)
    role: Role = "admin"

    @property
    def read_only(self) -> bool:
        return self.role == "reader"


class AuthConfigError(ValueError):
    """The server's credentials are missing or unusable; the message names the variable to set."""


def users_from_env(environ: MutableMapping[str, str] | None = None) -> list[User]:
    env = os.environ if environ is None else environ
    users: list[User] = []
    named: dict[str, str] = {}  # user name -> the variable that set it
    roles: tuple[tuple[str, str, Role, bool], ...] = (
        (ADMIN_USERNAME_ENV, ADMIN_PASSWORD_ENV, "admin", True),
        (WRITER_USERNAME_ENV, WRITER_PASSWORD_ENV, "writer", False),
        (READER_USERNAME_ENV, READER_PASSWORD_ENV, "reader", False))
    for user_var, password_var, role, required in roles:
        username, password = env.get(user_var, ""), env.get(password_var, "")
        if not username and not password and not required:
            continue
        if not username or ":" in username:
            raise AuthConfigError(f"{user_var} must be set to a user name without ':'")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AuthConfigError(f"{password_var} must be set to a password of at least "
                                  f"{MIN_PASSWORD_LENGTH} characters (user {username!r})")
        if username in named:
            raise AuthConfigError(f"{user_var} must differ from {named[username]} (both {username!r})")
        named[username] = user_var
        users.append(User(username, password.encode(), role))
    return users


class BasicAuthApp:
    """ASGI middleware: HTTP basic auth in front of ``app`` (HTTP and WebSocket; lifespan passes)."""

    def __init__(self, app: ASGIApp, users: list[User]) -> None:
        if not users:
            raise AuthConfigError("no MLflow user configured")
        self.app = app
        self.users = users

    def _user(self, scope: Scope) -> User | None:
        header = b""
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            username, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return None
        found = None
        for user in self.users:  # compare with every user: the time does not say which names exist
            name_ok = hmac.compare_digest(username, user.username.encode())
            password_ok = hmac.compare_digest(password, user.password)
            if sep and name_ok and password_ok:
                found = user
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if scope["type"] == "http" and method in ("GET", "HEAD") and scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        user = self._user(scope)
        if user is None:
            await _refuse(scope, send, 401, "UNAUTHENTICATED",
                          "MLflow needs credentials (HTTP basic): set MLFLOW_TRACKING_USERNAME and "
                          "MLFLOW_TRACKING_PASSWORD, e.g. with `eval \"$(mlplane env)\"`")
            return
        path = scope.get("path", "")
        if user.role != "admin" and (scope["type"] == "websocket" or not may(user.role, method, path)):
            what = "may only read (GET)" if user.role == "reader" else (
                "may log runs and models, register model versions and set aliases, nothing more")
            needed = "the writer or the admin user" if may("writer", method, path) else "the admin user"
            await _refuse(scope, send, 403, "PERMISSION_DENIED",
                          f"MLflow user {user.username!r} {what}; {method} {path} needs {needed}")
            return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="mlflow"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> BasicAuthApp:
    """The app ``mlflow server --app-name mlplane-auth`` serves: MLflow's own, behind basic auth."""
    users = users_from_env()  # before MLflow's app: a misconfigured server fails at once, naming the variable
    from mlflow.server.fastapi_app import app  # builds MLflow's server app on import: the server process only

    return BasicAuthApp(app, users)
