"""A pure ASGI middleware that requires an API key and applies per-key rate limits."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import orjson

from mlplane.auth.guard import Authenticator, AuthError, AuthSettings, RateLimited, credential

__all__ = ["V2_PUBLIC_PATHS", "ApiKeyMiddleware"]

log = logging.getLogger("mlplane.auth")

#: Paths that stay open with auth on: liveness/readiness (probes, the supervisor) and Prometheus metrics.
V2_PUBLIC_PATHS = re.compile(r"^/(?:v2/health/(?:live|ready)|v2/models/[^/]+(?:/versions/[^/]+)?/ready|metrics)?$")


class ApiKeyMiddleware:
    """Answers 401 to requests without a valid, unrevoked key and 429 to keys over their rate limit.

    Give it either a shared :class:`~mlplane.auth.Authenticator` (so HTTP and gRPC draw from the
    same buckets) or the :class:`~mlplane.auth.AuthSettings` to build one. ``public`` says which
    paths need no key (default: :data:`V2_PUBLIC_PATHS`). The key id of an accepted request is put in
    ``scope["state"]["api_key_id"]`` (``request.state.api_key_id`` in FastAPI). The key itself is
    never logged; rejections are logged with the key id only.
    """

    def __init__(
        self,
        app: Any,
        authenticator: Authenticator | None = None,
        *,
        settings: AuthSettings | None = None,
        public: re.Pattern[str] | Callable[[str], bool] = V2_PUBLIC_PATHS,
    ) -> None:
        if authenticator is None:
            if settings is None:
                raise TypeError("ApiKeyMiddleware needs an authenticator or settings")
            authenticator = Authenticator(settings)
        self.app = app
        self.authenticator = authenticator
        self._public = public.match if isinstance(public, re.Pattern) else public

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
        try:
            record = await self.authenticator.authenticate(credential(authorization, api_key))
        except AuthError as exc:
            log.info("%s %s refused (%d): key id %s", scope.get("method", "WS"), scope["path"], exc.status,
                     exc.key_id or "-")
            await _reject(scope, send, exc)
            return
        scope.setdefault("state", {})["api_key_id"] = record.id
        await self.app(scope, receive, send)


async def _reject(scope: dict[str, Any], send: Any, exc: AuthError) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        return
    body = orjson.dumps({"error": exc.message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
        headers.append((b"connection", b"close"))  # the request body was not read
    if isinstance(exc, RateLimited):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    else:
        headers.append((b"www-authenticate", b'Bearer realm="mlplane"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
