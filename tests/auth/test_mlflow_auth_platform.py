"""MLflow is protected when auth is on: a real local platform with `spec.auth.enabled`.

Without the platform's credentials nobody can register a model version or move an alias (the attack of
issue 13, finding 2: an unauthenticated client registered a pyfunc and moved `champion`); with them
(`eval "$(mlplane env)"`, as a user does in a shell) training, registering, deploying and promoting work,
and the supervisor and its model servers use them by themselves. The credentials are private: files 0600,
never in state.json, the logs, `mlplane status` or a process's command line.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane, status  # noqa: E402

KEY_RE = re.compile(r"mlp_[0-9a-f]{12}_[0-9A-Za-z]{40}")
PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: guarded}
spec:
  auth: {enabled: true}
"""
# A user's training script, run in a shell that did `eval "$(mlplane env)"` first.
TRAIN = """\
import sys
from mlplane_pipelines.iris import train_and_register
print(train_and_register(sys.argv[1], name="iris", C=float(sys.argv[2]), alias=sys.argv[3] or None).version)
"""


def _bare_env() -> dict[str, str]:
    """The environment of a shell without MLflow credentials."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}


def _train_in_shell(state_dir: Path, tracking: str, C: float, alias: str = "") -> subprocess.CompletedProcess:
    script = state_dir.parent / "train.py"
    script.write_text(TRAIN)
    cmd = f'eval "$("{sys.executable}" -m mlplane env)" && exec "{sys.executable}" {script} {tracking} {C} "{alias}"'
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600,
                          env={**_bare_env(), "MLPLANE_STATE_DIR": str(state_dir)})


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-auth")
    state_dir = base / ".mlplane"
    (base / "platform.yaml").write_text(PLATFORM)
    mlplane(state_dir, "up", "-f", str(base / "platform.yaml"))
    try:
        tracking = status(state_dir)["trackingUri"]
        trained = _train_in_shell(state_dir, tracking, 1.0, "champion")
        assert trained.returncode == 0, trained.stderr[-3000:]
        (key,) = KEY_RE.findall(mlplane(state_dir, "keys", "create", "app").stdout)
        yield {"dir": state_dir, "tracking": tracking, "key": key}
    finally:
        mlplane(state_dir, "down", check=False)


def _api(tracking: str, method: str, path: str, body: dict | None = None, auth: tuple[str, str] | None = None,
         ) -> httpx.Response:
    return httpx.request(method, f"{tracking}/api/2.0/mlflow/{path}", json=body, auth=auth, timeout=30)


def _credentials(state_dir: Path) -> tuple[str, str]:
    env = dict(line.split("=", 1) for line in (state_dir / "auth" / "mlflow.env").read_text().splitlines()
               if line and not line.startswith("#"))
    return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]


def _alias_version(tracking: str, creds: tuple[str, str]) -> str:
    r = _api(tracking, "GET", "registered-models/alias?name=iris&alias=champion", auth=creds)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]["version"]


def test_the_registry_cannot_be_written_without_credentials(guarded):
    tracking, creds = guarded["tracking"], _credentials(guarded["dir"])
    run = _api(tracking, "POST", "runs/create", {"experiment_id": "0"}, auth=creds).json()["run"]["info"]
    attacks = [
        ("POST", "registered-models/create", {"name": "evil"}),
        ("POST", "model-versions/create", {"name": "iris", "source": f"runs:/{run['run_id']}/model",
                                           "run_id": run["run_id"]}),
        ("POST", "registered-models/alias", {"name": "iris", "alias": "champion", "version": "1"}),
        ("DELETE", "registered-models/alias", {"name": "iris", "alias": "champion"}),
        ("GET", "registered-models/search", None),
    ]
    for method, path, body in attacks:
        for auth in (None, (creds[0], "not-the-platform-password"), ("admin", "password1234")):
            r = _api(tracking, method, path, body, auth=auth)
            assert r.status_code == 401, (method, path, auth and auth[0], r.status_code, r.text)
            assert r.headers["www-authenticate"] == 'Basic realm="mlflow"'
            assert "mlplane env" in r.json()["message"]
    # Nothing changed: one version, champion where the platform's user put it.
    versions = _api(tracking, "GET", "model-versions/search?filter=name%3D%27iris%27", auth=creds).json()
    assert [v["version"] for v in versions["model_versions"]] == ["1"]
    assert _alias_version(tracking, creds) == "1"
    assert _api(tracking, "GET", "registered-models/get?name=evil", auth=creds).status_code == 404
    assert httpx.get(f"{tracking}/health", timeout=30).status_code == 200  # probes stay open


def test_with_the_platform_credentials_users_register_deploy_and_promote(guarded):
    state_dir, tracking, creds = guarded["dir"], guarded["tracking"], _credentials(guarded["dir"])
    # The supervisor resolves the alias and the model server downloads the model: both with the credentials.
    mlplane(state_dir, "deploy", "iris", "--model", "models:/iris@champion")
    dep = status(state_dir)["deployments"]["iris"]
    assert dep["status"] == "ready" and dep["servedVersion"] == "1"
    body = {"inputs": [{"name": n, "shape": [1], "datatype": "FP64", "data": [v]} for n, v in
                       zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], [6.7, 3.0, 5.2, 2.3],
                           strict=True)]}
    r = httpx.post(f"{dep['url']}/v2/models/iris/infer", json=body, timeout=30,
                   headers={"Authorization": f"Bearer {guarded['key']}"})
    assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
    # A second version from a user's shell, then `mlplane promote` moves the alias through the supervisor.
    trained = _train_in_shell(state_dir, tracking, 0.02)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stdout.strip().splitlines()[-1] == "2"
    mlplane(state_dir, "promote", "iris", "--version", "2")
    assert _alias_version(tracking, creds) == "2"
    assert status(state_dir)["deployments"]["iris"]["servedVersion"] == "2"
    # Without credentials a shell gets MLflow's refusal, not a registered model.
    script = state_dir.parent / "train.py"
    refused = subprocess.run([sys.executable, str(script), tracking, "1.0", ""], capture_output=True, text=True,
                             timeout=600, env=_bare_env())
    assert refused.returncode != 0 and "MLflow needs credentials" in refused.stderr


def test_the_credentials_stay_private(guarded):
    state_dir = guarded["dir"]
    _, password = _credentials(state_dir)
    auth_dir = state_dir / "auth"
    assert stat.S_IMODE(auth_dir.stat().st_mode) == 0o700
    for name in ("mlflow.env", "mlflow-server.env"):
        assert stat.S_IMODE((auth_dir / name).stat().st_mode) == 0o600, name
    assert password not in (state_dir / "state.json").read_text()
    assert password not in mlplane(state_dir, "status", "-o", "json").stdout
    for log in (state_dir / "logs").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    state = status(state_dir)
    pids = [c["pid"] for c in [*state["components"].values(), *state["deployments"].values()] if c.get("pid")]
    pids.append(state["supervisor"]["pid"])
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            assert password not in " ".join(p.cmdline()), p.cmdline()
    # `mlplane env` prints the exports for `eval`; the file is the same.
    exports = mlplane(state_dir, "env").stdout
    assert f"export MLFLOW_TRACKING_PASSWORD={password}" in exports
    assert f"export MLFLOW_TRACKING_URI={state['trackingUri']}" in exports


def test_credentials_survive_down_and_up(guarded):
    state_dir, creds = guarded["dir"], _credentials(guarded["dir"])
    mlplane(state_dir, "down")
    mlplane(state_dir, "up", "-f", str(state_dir.parent / "platform.yaml"))
    assert _credentials(state_dir) == creds
    tracking = status(state_dir)["trackingUri"]
    assert _api(tracking, "GET", "registered-models/get?name=iris").status_code == 401
    assert _alias_version(tracking, creds) == "2"
    dep = status(state_dir)["deployments"]["iris"]  # restored with the same credentials
    assert dep["status"] == "ready" and dep["servedVersion"] == "2"
    state = json.loads((state_dir / "state.json").read_text())
    assert state["components"]["mlflow"]["status"] == "ready"
