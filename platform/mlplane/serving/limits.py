"""Pure ASGI middleware that caps HTTP request bodies (no proxy hop, no kserve import)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["MaxBodySizeMiddleware"]

Scope = dict[str, Any]
Message = dict[str, Any]


class MaxBodySizeMiddleware:
    """Answers 413 to bodies larger than ``max_bytes``.

    A declared ``Content-Length`` is checked before the app runs (the HTTP server itself holds the
    body to that length). A body without one (chunked) is read here, counting bytes as they stream
    in, and replayed to the app as a single message once it is known to fit.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, f"invalid Content-Length header: {value!r}")
                    return
                break
        if declared is not None:
            if declared > self.max_bytes:
                await self._too_large(send, declared)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # No Content-Length: count the streamed body before the app sees it.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._too_large(send, received, streamed=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any, size: int, streamed: bool = False) -> None:
        what = f"more than {self.max_bytes} bytes streamed" if streamed else f"{size} bytes"
        await self._reject(
            send,
            413,
            f"request body too large: {what}, the limit is {self.max_bytes} bytes "
            "(--max-request-bytes); send smaller batches",
        )

    @staticmethod
    async def _reject(send: Any, status: int, error: str) -> None:
        body = orjson.dumps({"error": error})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
