"""Model control is separate from data: no client can load, unload or switch models (issue 13, findings 1 and 3).

Real local platforms (MLflow, mlplane's KServe model server, tritonserver) get the attack of the issue —
``POST /v2/repository/models/iris/load`` with ``{"parameters": {"model_uri": <a pyfunc that runs code when
loaded>, "model_version": "7"}}``, ``.../unload``, and the gRPC ``RepositoryModelLoad``/``Unload`` — with no key,
a client key and a revoked key. Each one is refused with a message, the attacker's code never runs, the
served version (metadata and a prediction) is unchanged, and ``mlplane promote`` still switches versions.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "iris"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from client import SAMPLES, _inputs  # noqa: E402
from platform_helpers import mlplane, status  # noqa: E402

from mlplane.auth.mlflow import use_platform_credentials  # noqa: E402
from mlplane_pipelines.iris import train_and_register  # noqa: E402

KEY_RE = re.compile(r"mlp_[0-9a-f]{12}_[0-9A-Za-z]{40}")
REFUSED = "model control is not available to clients"
SECURED = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: secured}
spec:
  serving: {grpc: true}
  auth: {enabled: true, rateLimit: {requestsPerSecond: 200, burst: 400}}
"""
OPEN = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: open}
spec:
  serving: {grpc: true}
"""
EVIL_MODEL = """
from pathlib import Path

import mlflow.pyfunc
import numpy as np


class Evil(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        Path({marker!r}).write_text("the attacker's code ran")

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), 7, dtype=np.int64)


mlflow.models.set_model(Evil())
"""


def _evil_model(base: Path) -> tuple[Path, Path]:
    """A pyfunc whose loading writes ``marker``: if the file exists, a client ran code in a model server."""
    import mlflow.pyfunc

    marker = base / "pwned"
    code = base / "evil.py"
    code.write_text(EVIL_MODEL.format(marker=str(marker)))
    path = base / "evil"
    mlflow.pyfunc.save_model(str(path), python_model=str(code))
    marker.unlink(missing_ok=True)  # saving a model from code loads it once, here in the test
    return path, marker


def _up(base: Path, platform_yaml: str) -> tuple[Path, str]:
    state_dir = base / ".mlplane"
    (base / "platform.yaml").write_text(platform_yaml)
    mlplane(state_dir, "up", "-f", str(base / "platform.yaml"))
    use_platform_credentials(state_dir)  # auth on: MLflow needs the platform's user, as `eval "$(mlplane env)"` gives
    tracking = status(state_dir)["trackingUri"]
    train_and_register(tracking, name="iris", C=1.0)
    train_and_register(tracking, name="iris", C=0.02)
    return state_dir, tracking


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Auth on, the kserve runtime; a client key (alice) and a revoked key (bob)."""
    base = tmp_path_factory.mktemp("secured")
    state_dir, _ = _up(base, SECURED)
    try:
        keys = {}
        for name in ("alice", "bob"):
            (keys[name],) = KEY_RE.findall(mlplane(state_dir, "keys", "create", name).stdout)
        mlplane(state_dir, "keys", "revoke", "bob")
        mlplane(state_dir, "deploy", "iris", "--model", "models:/iris/1")
        evil, marker = _evil_model(base)
        yield {"dir": state_dir, "keys": keys, "evil": evil, "marker": marker}
    finally:
        mlplane(state_dir, "down", check=False)


@pytest.fixture(scope="module")
def open_platform(tmp_path_factory):
    """Auth off: a kserve and a triton deployment of the same model version."""
    base = tmp_path_factory.mktemp("open")
    state_dir, _ = _up(base, OPEN)
    try:
        mlplane(state_dir, "deploy", "iris", "--model", "models:/iris/1")
        mlplane(state_dir, "deploy", "tri", "--model", "models:/iris/1", "--runtime", "triton")
        evil, marker = _evil_model(base)
        yield {"dir": state_dir, "evil": evil, "marker": marker}
    finally:
        mlplane(state_dir, "down", check=False)


def _credentials(keys: dict[str, str]) -> dict[str, dict[str, str]]:
    """The attacker's headers: none, a client key (both spellings), a revoked key, a guessed control key."""
    return {
        "no key": {},
        "client key": {"x-api-key": keys["alice"]},
        "client bearer": {"Authorization": f"Bearer {keys['alice']}"},
        "revoked key": {"x-api-key": keys["bob"]},
        "guessed control key": {"mlplane-control-key": "guess", "x-api-key": keys["alice"]},
    }


def _attack_http(url: str, model: str, evil: Path, headers: dict[str, str]) -> list[httpx.Response]:
    body = {"parameters": {"model_uri": str(evil), "model_version": "7"}}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        return [
            client.post(f"/v2/repository/models/{model}/load", json=body),
            client.post(f"/v2/repository/models/{model}/unload", json={}),
            client.post(f"/v2//repository/models/{model}/load/", json=body),
            client.post("/v2/repository/index", json={}),
        ]


def _attack_grpc(address: str, model: str, evil: Path, headers: dict[str, str]) -> list[grpc.RpcError]:
    metadata = [(k.lower(), v) for k, v in headers.items()] or None
    params = {"model_uri": pb.ModelRepositoryParameter(string_param=str(evil)),
              "model_version": pb.ModelRepositoryParameter(string_param="7")}
    errors = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [(stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=model, parameters=params)),
                 (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=model))]
        for call, request in calls:
            with pytest.raises(grpc.RpcError) as info:
                call(request, metadata=metadata, timeout=60)
            errors.append(info.value)
    return errors


def _served(dep: dict, model: str, headers: dict[str, str]) -> tuple[list[str], str, str, list[int]]:
    """Metadata versions, then a prediction's version over HTTP and gRPC, and its classes (readiness 200).

    Triton ("tri") serves inference over gRPC only (docs/triton-limits.md): its HTTP route must refuse
    with 403, and its HTTP version is then the gRPC answer's."""
    versions = httpx.get(f"{dep['url']}/v2/models/{model}", headers=headers, timeout=30).json()["versions"]
    assert httpx.get(f"{dep['url']}/v2/models/{model}/ready", timeout=30).status_code == 200
    grpc_result = grpcclient.InferenceServerClient(url=dep["grpc"]).infer(
        model, _inputs(grpcclient, SAMPLES), headers=dict(headers))
    classes = grpc_result.as_numpy("output-0")
    http_client = httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"))
    if model == "tri":
        with pytest.raises(InferenceServerException) as refused:
            http_client.infer(model, _inputs(httpclient, SAMPLES), headers=dict(headers))
        assert str(refused.value.status()) == "403", refused.value
        http_version = grpc_result.get_response().model_version
    else:
        http_result = http_client.infer(model, _inputs(httpclient, SAMPLES), headers=dict(headers))
        assert np.array_equal(classes, http_result.as_numpy("output-0"))
        http_version = http_result.get_response()["model_version"]
    return (versions, http_version, grpc_result.get_response().model_version, np.asarray(classes).ravel().tolist())


def test_kserve_refuses_every_client_model_control_with_auth_on(secured):
    state_dir, keys = secured["dir"], secured["keys"]
    dep = status(state_dir)["deployments"]["iris"]
    before = _served(dep, "iris", {"x-api-key": keys["alice"]})
    assert before[:3] == (["1"], "1", "1")
    for who, headers in _credentials(keys).items():
        for response in _attack_http(dep["url"], "iris", secured["evil"], headers):
            assert response.status_code == 403, (who, response.request.url, response.text)
            assert REFUSED in response.json()["error"], (who, response.text)
        for error in _attack_grpc(dep["grpc"], "iris", secured["evil"], headers):
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED and REFUSED in error.details(), (who, error)
    assert not secured["marker"].exists(), "a client made the model server run its code"
    assert _served(dep, "iris", {"x-api-key": keys["alice"]}) == before
    md = httpx.get(f"{dep['url']}/v2", headers={"x-api-key": keys["alice"]}, timeout=30).json()
    assert "model_repository_extension" not in md["extensions"]
    after = status(state_dir)["deployments"]["iris"]
    assert after["status"] == "ready" and after["servedVersion"] == "1" and after["pid"] == dep["pid"]


def test_promote_still_switches_the_kserve_version_with_auth_on(secured):
    state_dir, alice = secured["dir"], secured["keys"]["alice"]
    out = mlplane(state_dir, "promote", "iris", "--version", "2")
    assert "1 → 2" in out.stdout
    dep = status(state_dir)["deployments"]["iris"]
    versions, http_version, grpc_version, _ = _served(dep, "iris", {"x-api-key": alice})
    assert (versions, http_version, grpc_version) == (["2"], "2", "2")
    # The control socket is the supervisor's alone: mode 0600 in a 0700 directory.
    sockets = list((state_dir / "control").glob("*.sock"))
    assert sockets and all(stat.S_IMODE(s.stat().st_mode) == 0o600 for s in sockets)
    assert stat.S_IMODE((state_dir / "control").stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["iris", "tri"])
def test_neither_runtime_lets_a_client_load_or_unload_with_auth_off(open_platform, name):
    state_dir = open_platform["dir"]
    dep = status(state_dir)["deployments"][name]
    before = _served(dep, name, {})
    assert before[:3] == (["1"], "1", "1")
    attacker = _credentials({"alice": "mlp_000000000000_" + "a" * 40, "bob": "anything"})
    for who, headers in attacker.items():
        for response in _attack_http(dep["url"], name, open_platform["evil"], headers)[:2]:
            assert response.status_code == 403, (who, response.request.url, response.text)
            text = response.json()["error"]
            if name == "iris":
                assert REFUSED in text, text
            else:  # Triton's own refusal names the header it expects, never its value
                assert "restricted" in text and "mlplane-control-key" in text, text
        for error in _attack_grpc(dep["grpc"], name, open_platform["evil"], headers):
            assert error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE), (who, error)
            assert (REFUSED if name == "iris" else "restricted") in error.details(), (who, error.details())
    assert not open_platform["marker"].exists(), "a client made the model server run its code"
    assert _served(dep, name, {}) == before
    after = status(state_dir)["deployments"][name]
    assert after["status"] == "ready" and after["servedVersion"] == "1" and after["pid"] == dep["pid"]


@pytest.mark.parametrize("name", ["iris", "tri"])
def test_promote_still_switches_both_runtimes_with_auth_off(open_platform, name):
    state_dir = open_platform["dir"]
    out = mlplane(state_dir, "promote", name, "--version", "2")
    assert "1 → 2" in out.stdout
    dep = status(state_dir)["deployments"][name]
    versions, http_version, grpc_version, _ = _served(dep, name, {})
    assert (versions, http_version, grpc_version) == (["2"], "2", "2")


def test_the_triton_control_key_stays_in_its_0600_file(open_platform):
    state_dir = open_platform["dir"]
    key_file = state_dir / "control" / "model-control.key"
    key = key_file.read_text().strip()
    assert len(key) >= 32 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.dumps(status(state_dir)).find(key) == -1
    files = [p for p in state_dir.rglob("*") if p.is_file() and p != key_file and p.suffix != ".db"
             and "artifacts" not in p.parts]
    assert any(p.name == "tri.log" for p in files)
    for path in files:
        assert key not in path.read_bytes().decode("utf-8", "replace"), path
