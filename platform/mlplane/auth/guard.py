"""Deciding whether a request may pass: key lookup, verification cache, rate limit.

Transport-free: the ASGI middleware and the gRPC interceptor both call
:meth:`Authenticator.authenticate` and map its two errors (:class:`Unauthenticated` → 401 /
``UNAUTHENTICATED``, :class:`RateLimited` → 429 / ``RESOURCE_EXHAUSTED``) in one place each.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlplane.auth.keys import KeyFileError, KeyRecord, MalformedKey, parse_key, read_keys, verify_key
from mlplane.auth.ratelimit import RateLimit, RateLimiter, retry_after
from mlplane.spec.platform import AuthSpec

__all__ = ["AuthError", "AuthSettings", "Authenticator", "RateLimited", "Unauthenticated", "credential"]

log = logging.getLogger("mlplane.auth")

_HOW = "send it as `Authorization: Bearer <key>` or `x-api-key: <key>`"
_NEGATIVE_CACHE = 4096


class AuthError(Exception):
    """A request that may not pass; ``status`` is the HTTP status it maps to."""

    status = 401

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key_id = key_id


class Unauthenticated(AuthError):
    status = 401


class RateLimited(AuthError):
    status = 429

    def __init__(self, message: str, key_id: str, retry_after_s: int) -> None:
        super().__init__(message, key_id)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AuthSettings:
    """Where a server finds the key file, and the rate limit of keys that have none of their own."""

    keys_file: Path
    default_limit: RateLimit

    @classmethod
    def from_spec(cls, auth: AuthSpec, keys_file: Path) -> AuthSettings | None:
        """The settings for a platform's ``spec.auth``; None when auth is off."""
        if not auth.enabled:
            return None
        return cls(keys_file, RateLimit(auth.rate_limit.requests_per_second, auth.rate_limit.burst))


def credential(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def _fingerprint(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    """Checks keys against the key file and charges each key's token bucket.

    The file is re-read when its inode, size or mtime changes (one ``stat`` per request), so a
    revoked key stops working on the next request. A key that verified once is remembered in memory
    by its SHA-256 until the file changes; keys that failed are remembered too, so repeating a bad
    key does not cost scrypt again.
    """

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.limiter = RateLimiter(clock)
        self._signature: tuple[int, int, int] | None = None
        self._records: dict[str, KeyRecord] = {}
        self._verified: dict[bytes, str] = {}
        self._rejected: OrderedDict[bytes, None] = OrderedDict()
        self._file_error: str | None = None

    def records(self) -> dict[str, KeyRecord]:
        """The key file's records by id, re-read if the file changed."""
        path = self.settings.keys_file
        try:
            st = os.stat(path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        if signature != self._signature:
            try:
                records = {r.id: r for r in read_keys(path)}
                self._file_error = None
            except KeyFileError as exc:  # keep serving on what we had; say so once
                if self._file_error != str(exc):
                    log.error("%s", exc)
                self._file_error = str(exc)
                return self._records
            self._signature = signature
            self._records = records
            self._verified.clear()
            self._rejected.clear()
            self.limiter.forget({i for i, r in records.items() if r.active})
        return self._records

    async def authenticate(self, key: str | None) -> KeyRecord:
        """The record of ``key`` after charging its bucket; raises :class:`AuthError` when it may not pass."""
        if key is None:
            raise Unauthenticated(f"missing API key: {_HOW}")
        try:
            key_id = parse_key(key)
        except MalformedKey as exc:
            raise Unauthenticated(str(exc)) from None
        record = self.records().get(key_id)
        if record is None:
            raise Unauthenticated(f"unknown API key (id {key_id}); create one with `mlplane keys create NAME`",
                                  key_id)
        fingerprint = _fingerprint(key)
        if self._verified.get(fingerprint) != key_id:
            if fingerprint in self._rejected:
                raise Unauthenticated(f"invalid API key (id {key_id})", key_id)
            if not await asyncio.to_thread(verify_key, key, record.hash):
                self._rejected[fingerprint] = None
                if len(self._rejected) > _NEGATIVE_CACHE:
                    self._rejected.popitem(last=False)
                raise Unauthenticated(f"invalid API key (id {key_id})", key_id)
            current = self.records().get(key_id)  # the file may have changed while hashing
            if current is None or current.hash != record.hash:
                raise Unauthenticated(f"unknown API key (id {key_id})", key_id)
            record = current
            self._verified[fingerprint] = key_id
        if not record.active:
            raise Unauthenticated(f"API key {key_id} ({record.name}) was revoked at {record.revoked}", key_id)
        if not record.system:
            limit = record.rate_limit or self.settings.default_limit
            wait = self.limiter.take(key_id, limit)
            if wait > 0:
                seconds = retry_after(wait)
                raise RateLimited(f"rate limit exceeded for API key {key_id} ({limit.describe()}); "
                                  f"retry after {seconds} s", key_id, seconds)
        return record
