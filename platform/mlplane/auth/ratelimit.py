"""Token buckets, one per API key (pure: the caller passes the time)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimit", "RateLimiter", "TokenBucket", "retry_after"]


@dataclass(frozen=True)
class RateLimit:
    """``requests_per_second`` on average, up to ``burst`` at once."""

    requests_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.requests_per_second > 0:
            raise ValueError(f"requests per second must be > 0, got {self.requests_per_second}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")

    def describe(self) -> str:
        return f"{self.requests_per_second:g} requests/s, burst {self.burst}"


class TokenBucket:
    """Holds up to ``limit.burst`` tokens, refilled at ``limit.requests_per_second``; a request takes one."""

    __slots__ = ("limit", "tokens", "updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit.burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token at time ``now``: 0.0 when allowed, else the seconds until one is available."""
        rate = self.limit.requests_per_second
        if now > self.updated:
            self.tokens = min(float(self.limit.burst), self.tokens + (now - self.updated) * rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


class RateLimiter:
    """A bucket per key id. A key whose limit changes gets a fresh, full bucket."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()  # the gRPC and HTTP servers may share one limiter

    def take(self, key_id: str, limit: RateLimit) -> float:
        """0.0 when ``key_id`` may make a request now, else the seconds to wait (see :meth:`TokenBucket.take`)."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key_id)
            if bucket is None or bucket.limit != limit:
                bucket = self._buckets[key_id] = TokenBucket(limit, now)
            return bucket.take(now)

    def forget(self, keep: set[str]) -> None:
        """Drop the buckets of keys not in ``keep`` (revoked or deleted)."""
        with self._lock:
            for key_id in set(self._buckets) - keep:
                del self._buckets[key_id]


def retry_after(wait_s: float) -> int:
    """The ``Retry-After`` value for a wait: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait_s))
