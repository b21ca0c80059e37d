"""API keys and per-key rate limits for model endpoints (``spec.auth`` of the Platform).

Keys are created, listed and revoked with ``mlplane keys``; the key file
(``.mlplane/auth/keys.json``, mode 0600) holds scrypt hashes, never keys. Servers re-read it when it
changes, so a revocation applies to the next request. Requests carry a key as
``Authorization: Bearer <key>`` (OpenAI clients) or ``x-api-key: <key>``; without a valid one they get
401 ``{"error": ...}`` with ``WWW-Authenticate: Bearer``, over the key's token bucket 429 with
``Retry-After`` (seconds). Liveness, readiness and ``/metrics`` stay open. Keys are never logged;
key ids are.

Any Starlette/FastAPI app (a Ray Serve ingress too)::

    from mlplane.auth import ApiKeyMiddleware, AuthSettings, RateLimit
    from mlplane.runtime.local.paths import StatePaths

    settings = AuthSettings.from_spec(platform.spec.auth, StatePaths(state_dir).auth_keys_file)
    # or AuthSettings(keys_file=Path(...), default_limit=RateLimit(requests_per_second=10, burst=20))
    if settings is not None:   # None: spec.auth.enabled is false
        app.add_middleware(ApiKeyMiddleware, settings=settings,
                           public=re.compile(r"^/(healthz)?$"))   # paths that need no key
    # handlers may read request.state.api_key_id

A ``grpc.aio`` server: ``aio.server(interceptors=[ApiKeyInterceptor(authenticator)])`` (from
:mod:`mlplane.auth.grpc_auth`). Give the same :class:`Authenticator` to
``ApiKeyMiddleware(app, authenticator)`` and both protocols draw from one bucket per key (what
``mlplane.serving`` does). Limits hold per server process: N replicas allow N times the rate.
"""

from mlplane.auth.asgi import V2_PUBLIC_PATHS, ApiKeyMiddleware
from mlplane.auth.guard import Authenticator, AuthError, AuthSettings, RateLimited, Unauthenticated, credential
from mlplane.auth.keys import (
    SYSTEM_KEY_NAME,
    DuplicateKeyName,
    InvalidKeyName,
    KeyFileError,
    KeyRecord,
    KeyStore,
    KeyStoreError,
    UnknownKey,
)
from mlplane.auth.ratelimit import RateLimit, RateLimiter, TokenBucket

__all__ = [
    "SYSTEM_KEY_NAME",
    "V2_PUBLIC_PATHS",
    "ApiKeyMiddleware",
    "AuthError",
    "AuthSettings",
    "Authenticator",
    "DuplicateKeyName",
    "InvalidKeyName",
    "KeyFileError",
    "KeyRecord",
    "KeyStore",
    "KeyStoreError",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "TokenBucket",
    "Unauthenticated",
    "UnknownKey",
    "credential",
]
