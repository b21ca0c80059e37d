"""API keys and rate limits end to end: a real local platform with `spec.auth.enabled`, a real KServe
model server, keys managed with `mlplane keys`, requests over V2 HTTP (httpx, tritonclient) and gRPC.

Each refusal gets the right status and message, and the server keeps serving the other keys.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "iris"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from client import SAMPLES, _inputs  # noqa: E402
from platform_helpers import mlplane, status  # noqa: E402

from mlplane.auth.mlflow import use_platform_credentials  # noqa: E402
from mlplane_pipelines.iris import train_and_register  # noqa: E402

KEY_RE = re.compile(r"mlp_[0-9a-f]{12}_[0-9A-Za-z]{40}")
PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: secured}
spec:
  serving: {grpc: true}
  auth:
    enabled: true
    rateLimit: {requestsPerSecond: 50, burst: 100}
"""


def _create(state_dir: Path, name: str, *flags: str) -> str:
    out = mlplane(state_dir, "keys", "create", name, *flags)
    assert "not shown again" in out.stderr
    (key,) = KEY_RE.findall(out.stdout)
    return key


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("auth")
    state_dir = base / ".mlplane"
    (base / "platform.yaml").write_text(PLATFORM)
    mlplane(state_dir, "up", "-f", str(base / "platform.yaml"))
    use_platform_credentials(state_dir)  # auth on: MLflow needs the platform's user, as `eval "$(mlplane env)"` gives
    try:
        tracking = status(state_dir)["trackingUri"]
        train_and_register(tracking, name="iris", C=1.0, alias="champion")
        train_and_register(tracking, name="iris", C=0.02)
        keys = {name: _create(state_dir, name) for name in ("alice", "bob")}
        keys["slow"] = _create(state_dir, "slow", "--rps", "0.2", "--burst", "2")
        mlplane(state_dir, "deploy", "iris", "--model", "models:/iris@champion")
        dep = status(state_dir)["deployments"]["iris"]
        yield {"dir": state_dir, "keys": keys, "url": dep["url"], "grpc": dep["grpc"]}
    finally:
        mlplane(state_dir, "down", check=False)


def _infer_body() -> dict:
    cols = SAMPLES.T.tolist()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return {"inputs": [{"name": n, "shape": [3], "datatype": "FP64", "data": c}
                       for n, c in zip(names, cols, strict=True)]}


def _post(platform: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{platform['url']}/v2/models/iris/infer", json=_infer_body(), headers=headers or {}, timeout=30)


def _grpc_metadata(platform: dict, key: str | None) -> grpc.RpcError | pb.ServerMetadataResponse:
    with grpc.insecure_channel(platform["grpc"]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=[("x-api-key", key)] if key else None)
        except grpc.RpcError as exc:
            return exc


def test_health_stays_open_and_a_missing_key_gets_401(platform):
    url = platform["url"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/iris/ready"):
        assert httpx.get(url + path).status_code == 200, path
    r = _post(platform)
    assert r.status_code == 401
    assert "missing API key" in r.json()["error"] and "Authorization: Bearer" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{url}/v2/models/iris").status_code == 401  # metadata needs a key too


def test_unknown_and_malformed_keys_get_401(platform):
    fake = "mlp_0123456789ab_" + "A" * 40
    r = _post(platform, {"Authorization": f"Bearer {fake}"})
    assert r.status_code == 401 and "unknown API key" in r.json()["error"]
    r = _post(platform, {"x-api-key": "sk-definitely-not-ours"})
    assert r.status_code == 401 and "malformed API key" in r.json()["error"]
    alice = platform["keys"]["alice"]
    wrong_secret = alice[:-6] + ("zzzzzz" if not alice.endswith("zzzzzz") else "yyyyyy")
    r = _post(platform, {"x-api-key": wrong_secret})
    assert r.status_code == 401 and "invalid API key" in r.json()["error"]


def test_valid_key_over_http_with_tritonclient_and_both_headers(platform):
    key = platform["keys"]["alice"]
    client = httpclient.InferenceServerClient(platform["url"].removeprefix("http://"))
    result = client.infer("iris", _inputs(httpclient, SAMPLES), headers={"Authorization": f"Bearer {key}"})
    assert result.as_numpy("output-0").tolist() == [0, 1, 2]
    assert client.get_model_metadata("iris", headers={"Authorization": f"Bearer {key}"})["name"] == "iris"
    r = _post(platform, {"x-api-key": key})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [0, 1, 2]


def test_grpc_needs_a_key_except_for_health(platform):
    key = platform["keys"]["alice"]
    client = grpcclient.InferenceServerClient(platform["grpc"])
    assert client.is_server_live() and client.is_model_ready("iris")  # open without a key
    with pytest.raises(Exception) as err:
        client.infer("iris", _inputs(grpcclient, SAMPLES))
    assert "UNAUTHENTICATED" in str(err.value.status()) and "missing API key" in str(err.value)
    result = client.infer("iris", _inputs(grpcclient, SAMPLES), headers={"authorization": f"Bearer {key}"})
    assert result.as_numpy("output-0").tolist() == [0, 1, 2]
    denied = _grpc_metadata(platform, "mlp_0123456789ab_" + "B" * 40)
    assert isinstance(denied, grpc.RpcError) and denied.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown API key" in denied.details()
    assert _grpc_metadata(platform, key).name


def test_rate_limit_gives_429_with_retry_after_then_serves_again(platform):
    slow, alice = platform["keys"]["slow"], platform["keys"]["alice"]
    assert [_post(platform, {"x-api-key": slow}).status_code for _ in range(2)] == [200, 200]  # the burst
    limited = _post(platform, {"x-api-key": slow})
    assert limited.status_code == 429
    assert "rate limit exceeded" in limited.json()["error"] and "0.2 requests/s, burst 2" in limited.json()["error"]
    retry = int(limited.headers["retry-after"])
    assert retry >= 1
    over_grpc = _grpc_metadata(platform, slow)  # one bucket per key for HTTP and gRPC
    assert isinstance(over_grpc, grpc.RpcError) and over_grpc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(over_grpc.trailing_metadata())["retry-after"]) >= 1
    assert _post(platform, {"x-api-key": alice}).status_code == 200  # other keys are not affected
    time.sleep(retry + 1)  # the gRPC call above waited in the same bucket; one more second covers it
    assert _post(platform, {"x-api-key": slow}).status_code == 200


def test_promote_works_with_auth_on(platform):
    """The supervisor switches versions with its own key (hashed on disk, never shown)."""
    out = mlplane(platform["dir"], "promote", "iris", "--version", "2")
    assert "1 → 2" in out.stdout
    r = _post(platform, {"x-api-key": platform["keys"]["alice"]})
    assert r.status_code == 200 and r.json()["model_version"] == "2"


def test_revoked_key_gets_401_while_other_keys_are_served(platform):
    state_dir, keys = platform["dir"], platform["keys"]
    assert _post(platform, {"x-api-key": keys["bob"]}).status_code == 200
    out = mlplane(state_dir, "keys", "revoke", "bob")
    assert "revoked" in out.stdout
    r = _post(platform, {"x-api-key": keys["bob"]})
    assert r.status_code == 401 and "was revoked" in r.json()["error"] and "(bob)" in r.json()["error"]
    denied = _grpc_metadata(platform, keys["bob"])
    assert isinstance(denied, grpc.RpcError) and denied.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _post(platform, {"x-api-key": keys["alice"]}).status_code == 200
    again = mlplane(state_dir, "keys", "revoke", "nobody", check=False)
    assert again.returncode == 2 and "no key with id or name 'nobody'" in again.stderr
    dup = mlplane(state_dir, "keys", "create", "alice", check=False)
    assert dup.returncode == 2 and "'alice' exists already" in dup.stderr


def test_triton_is_refused_when_auth_is_on(platform):
    out = mlplane(platform["dir"], "deploy", "tri", "--model", "models:/iris/1", "--runtime", "triton", check=False)
    assert out.returncode == 2 and "cannot check mlplane API keys" in out.stderr
    assert _post(platform, {"x-api-key": platform["keys"]["alice"]}).status_code == 200


def test_keys_list_and_state_dir_never_show_a_key(platform):
    state_dir, keys = platform["dir"], platform["keys"]
    table = mlplane(state_dir, "keys", "list").stdout
    listed = json.loads(mlplane(state_dir, "keys", "list", "-o", "json").stdout)
    as_yaml = mlplane(state_dir, "keys", "list", "-o", "yaml").stdout
    assert {k["name"] for k in listed} == {"alice", "bob", "slow", "mlplane-supervisor"}
    assert all(set(k) == {"id", "name", "created", "revoked", "rateLimit", "system"} for k in listed)
    assert next(k for k in listed if k["name"] == "bob")["revoked"]
    assert "bob" in table and "0.2/s, burst 2" in table
    for text in (table, json.dumps(listed), as_yaml):
        assert not KEY_RE.search(text) and "digest" not in text and "salt" not in text
    # No key, ours or the supervisor's, in any file under the state dir: logs, state, the key file.
    files = [p for p in state_dir.rglob("*") if p.is_file() and p.suffix != ".db" and "artifacts" not in p.parts]
    assert any(p.name == "iris.log" for p in files) and any(p.name == "keys.json" for p in files)
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        assert not KEY_RE.search(text), path
        assert not any(key.split("_", 2)[2] in text for key in keys.values()), path
