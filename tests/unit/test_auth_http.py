"""The API-key ASGI middleware on a real FastAPI app, the spec fields and the local plan with auth on."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

from mlplane.auth import ApiKeyMiddleware, AuthSettings, KeyStore, RateLimit
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import Endpoint, ResolvedModel, kserve_process
from mlplane.runtime.local.runtimes import ServingContext, TritonRuntime, UnsupportedRuntime
from mlplane.spec import SpecError, load_dict, load_text
from mlplane.spec.platform import AuthSpec


def _app(keys_file: Path, limit: RateLimit) -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.post("/v2/models/iris/infer")
    async def infer(request: Request) -> dict:
        return {"key_id": request.state.api_key_id, "bytes": len(await request.body())}

    app.add_middleware(ApiKeyMiddleware, settings=AuthSettings(keys_file, limit))
    return app


def _requests(app: FastAPI, calls: list[dict]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request(**call) for call in calls]

    return asyncio.run(go())


def test_middleware_answers_401_and_429_with_clear_messages(tmp_path: Path):
    keys = tmp_path / "keys.json"
    store = KeyStore(keys)
    alice, key = store.create("alice")
    app = _app(keys, RateLimit(0.001, 2))
    infer = {"method": "POST", "url": "/v2/models/iris/infer", "content": b"{}"}
    r = _requests(app, [
        {"method": "GET", "url": "/v2/health/ready"},
        infer,
        {**infer, "headers": {"Authorization": "Bearer mlp_0123456789ab_" + "x" * 40}},
        {**infer, "headers": {"Authorization": f"Bearer {key}"}},
        {**infer, "headers": {"x-api-key": key}},
        {**infer, "headers": {"x-api-key": key}},
    ])
    assert r[0].status_code == 200  # readiness needs no key
    assert r[1].status_code == 401 and r[1].headers["www-authenticate"].startswith("Bearer")
    assert "missing API key" in r[1].json()["error"]
    assert r[2].status_code == 401 and "unknown API key" in r[2].json()["error"]
    assert r[3].status_code == 200 and r[3].json() == {"key_id": alice.id, "bytes": 2}
    assert r[4].status_code == 200
    assert r[5].status_code == 429
    assert "rate limit exceeded" in r[5].json()["error"] and alice.id in r[5].json()["error"]
    assert int(r[5].headers["retry-after"]) >= 1
    store.revoke(alice.id)
    (revoked,) = _requests(app, [{**infer, "headers": {"x-api-key": key}}])
    assert revoked.status_code == 401 and "was revoked" in revoked.json()["error"]


def test_the_key_is_never_logged(tmp_path: Path, caplog):
    keys = tmp_path / "keys.json"
    _, key = KeyStore(keys).create("alice")
    KeyStore(keys).revoke("alice")
    caplog.set_level("DEBUG")
    _requests(_app(keys, RateLimit(10, 10)), [{"method": "POST", "url": "/v2/models/iris/infer",
                                                "headers": {"x-api-key": key}}])
    assert "refused (401)" in caplog.text
    assert key not in caplog.text and key.split("_", 2)[2] not in caplog.text


def test_custom_public_paths():
    app = FastAPI()

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    app.add_middleware(ApiKeyMiddleware, settings=AuthSettings(Path("/nonexistent/keys.json"), RateLimit(1, 1)),
                       public=re.compile(r"^/healthz$"))
    ok, refused = _requests(app, [{"method": "GET", "url": "/healthz"}, {"method": "GET", "url": "/v2/health/ready"}])
    assert ok.status_code == 200 and refused.status_code == 401


# ------------------------------------------------------------------------------------------ spec and plan
PLATFORM = """
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: local}
spec:
  auth:
    enabled: true
    rateLimit: {requestsPerSecond: 2.5, burst: 4}
"""


def test_spec_auth_defaults_off_and_validates_limits():
    (platform,) = load_text(PLATFORM, source="platform.yaml")
    assert platform.spec.auth.enabled and platform.spec.auth.rate_limit.burst == 4
    default = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "metadata": {"name": "p"}},
                        source="x")
    assert not default.spec.auth.enabled
    with pytest.raises(SpecError, match=r"spec\.auth\.rateLimit\.requestsPerSecond"):
        load_text(PLATFORM.replace("2.5", "0"), source="platform.yaml")


def test_model_server_gets_the_key_file_path_and_limits_never_a_key(tmp_path: Path):
    paths = StatePaths(tmp_path)
    (platform,) = load_text(PLATFORM, source="platform.yaml")
    spec = kserve_process(paths, "iris", ResolvedModel("models:/iris/1", "1"), Endpoint("127.0.0.1", 8001, 8002),
                          "http://127.0.0.1:5000", 1 << 20, 5, platform.spec.auth)
    argv = list(spec.argv)
    assert argv[argv.index("--auth-keys-file") + 1] == str(tmp_path / "auth" / "keys.json")
    assert argv[argv.index("--auth-rps") + 1] == "2.5" and argv[argv.index("--auth-burst") + 1] == "4"
    assert not any("mlp_" in a for a in argv) and not any("mlp_" in v for v in spec.env.values())
    off = kserve_process(paths, "iris", ResolvedModel("models:/iris/1", "1"), Endpoint("127.0.0.1", 8001, 8002),
                         "http://127.0.0.1:5000", 1 << 20, 5, AuthSpec())
    assert "--auth-keys-file" not in off.argv


def test_triton_deployments_are_refused_when_auth_is_on(tmp_path: Path):
    (platform,) = load_text(PLATFORM, source="platform.yaml")
    dep = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
                     "spec": {"model": "models:/iris/1", "runtime": "triton"}}, source="x")
    ctx = ServingContext(StatePaths(tmp_path), "http://127.0.0.1:5000", platform)
    with pytest.raises(UnsupportedRuntime, match="cannot check mlplane API keys"):
        TritonRuntime().prepare(ctx, dep, ResolvedModel("models:/iris/1", "1"), None)
