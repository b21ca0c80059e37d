"""End to end: the local supervisor heals, adopts, and never loses or kills what it should not (issue 13,
findings 3, 6, 7 and 10).

One real platform (MLflow, a kserve and a triton deployment of the iris model), driven through the `mlplane`
CLI, gets the faults of the issue:

- broken state files before `up` (a corrupt ports.json and a state.json that is a JSON list): `up` says so,
  moves them aside and starts; state files, logs and MLflow's database are the owner's only;
- a model unloaded behind the supervisor's back through the model servers' private control (the kserve
  control socket, Triton's restricted API with the platform's control key): the process stays alive, the
  supervisor notices that the model is not ready, reloads it, `status` says so and requests succeed again;
- a promote to a version the server refuses: the MLflow alias moves back, the error says why, and the
  deployment is restored by the next `up` on the version it served;
- `kill -9` of the supervisor and `mlplane up` while clients send requests over HTTP and gRPC to both
  servers: the new supervisor adopts the running servers (same pids, restart counts kept) and no request
  fails;
- a saved deployment that cannot be restored is listed as failed with the reason, never silently dropped.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from mlflow import MlflowClient
from platform_helpers import mlplane, platform_processes, status, wait_for

from mlplane.registry import tracking as tracking_uris
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import TRITON_CONTROL_HEADER
from mlplane_pipelines.iris import train_and_register

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "iris"))
from client import SAMPLES, _inputs  # noqa: E402

pytestmark = pytest.mark.e2e

PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: faults}
spec:
  serving: {grpc: true}
"""
DEPLOYMENTS = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec: {model: 'models:/iris@champion'}
---
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {name: tri}
spec: {model: 'models:/iris/1', runtime: triton}
"""


class Unloadable(mlflow.pyfunc.PythonModel):
    """Pickled by reference to this test module, which model servers cannot import: every load fails."""

    def predict(self, context, model_input, params=None):
        return np.zeros(len(model_input), dtype=np.int64)


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    state_dir = base / ".mlplane"
    (state_dir / "logs").mkdir(parents=True)
    # What a crash, a full disk or a clumsy edit leaves behind: `up` must neither trace back nor refuse.
    (state_dir / "ports.json").write_bytes(b"\xff\xfe not ports")
    (state_dir / "state.json").write_text("[]")
    old_log = state_dir / "logs" / "supervisor.log"
    old_log.write_text("an earlier session's log\n")
    old_log.chmod(0o644)
    (base / "platform.yaml").write_text(PLATFORM)
    up = mlplane(state_dir, "up", "-f", str(base / "platform.yaml"))
    try:
        tracking = status(state_dir)["trackingUri"]
        train_and_register(tracking, name="iris", C=1.0, alias="champion")
        train_and_register(tracking, name="iris", C=0.02)
        (base / "deployments.yaml").write_text(DEPLOYMENTS)
        mlplane(state_dir, "deploy", "-f", str(base / "deployments.yaml"))
        yield {"dir": state_dir, "base": base, "tracking": tracking, "up": up}
    finally:
        mlplane(state_dir, "down", check=False)
    assert platform_processes(state_dir) == []


def _clients(dep: dict) -> dict[str, Callable[[], str]]:
    """One persistent HTTP and one gRPC client of a deployment: each call sends a V2 request, returns the version."""
    name = dep["name"]
    http = httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"), network_timeout=120)
    grpc = grpcclient.InferenceServerClient(url=dep["grpc"])

    def over_http() -> str:
        result = http.infer(name, _inputs(httpclient, SAMPLES))
        assert result.as_numpy("output-0").shape == (3,)
        return result.get_response()["model_version"]

    def over_grpc() -> str:
        result = grpc.infer(name, _inputs(grpcclient, SAMPLES), client_timeout=120)
        assert result.as_numpy("output-0").shape == (3,)
        return result.get_response().model_version

    return {f"{name}/http": over_http, f"{name}/grpc": over_grpc}


def _under_load(fault: Callable[[], None], calls: dict[str, Callable[[], str]]) -> dict[str, list]:
    """Run ``fault`` while one thread per client loops requests; every failure is counted, none retried."""
    results: dict[str, list] = {"ok": [], "errors": []}
    stop = threading.Event()

    def loop(label: str, call: Callable[[], str]) -> None:
        while not stop.is_set():
            try:
                results["ok"].append((label, call()))
            except Exception as exc:  # every failure counts
                results["errors"].append(f"{label}: {exc!r}")

    threads = [threading.Thread(target=loop, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results["ok"]) >= 4 * len(calls), 60, "the clients to get going")
        fault()
        count = len(results["ok"])
        wait_for(lambda: len(results["ok"]) >= count + 4 * len(calls), 60, "requests after the fault")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    return results


def _deployment(state_dir: Path, name: str) -> dict:
    return {"name": name, **status(state_dir)["deployments"][name]}


def test_up_moves_broken_state_files_aside_and_keeps_state_private(platform):
    state_dir, up = platform["dir"], platform["up"]
    assert "Traceback" not in up.stderr
    assert "ports.json is not UTF-8 text" in up.stderr and "URLs change" in up.stderr
    assert "state.json holds a JSON list, not an object" in up.stderr
    assert len(list(state_dir.glob("ports.json.corrupt-*"))) == 1
    assert len(list(state_dir.glob("state.json.corrupt-*"))) == 1
    assert status(state_dir)["warnings"]  # `status -o json` keeps telling
    private = [state_dir / "state.json", state_dir / "ports.json", state_dir / "platform.yaml",
               state_dir / "mlflow" / "mlflow.db", *(state_dir / "logs").glob("*.log"),
               *(state_dir / "deployments").glob("*.yaml")]
    assert len(private) >= 8
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is readable by others"
    for path in (state_dir, state_dir / "logs", state_dir / "mlflow", state_dir / "deployments"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_an_unloaded_kserve_model_is_noticed_and_reloaded(platform):
    state_dir = platform["dir"]
    dep = _deployment(state_dir, "iris")
    assert dep["reloads"] == 0
    infer = _clients(dep)["iris/http"]
    version = infer()
    # Behind the supervisor's back: its private control socket, the only place an unload is accepted.
    transport = httpx.HTTPTransport(uds=str(StatePaths(state_dir).control_socket("iris")))
    with httpx.Client(transport=transport, timeout=60) as control:
        assert control.post("http://control/v2/repository/models/iris/unload").status_code == 200
    healed = wait_for(lambda: (d := _deployment(state_dir, "iris"))["reloads"] == 1 and d["status"] == "ready"
                      and d, 120, "the supervisor to reload the unloaded model")
    assert healed["pid"] == dep["pid"] and healed["restarts"] == dep["restarts"]  # reloaded in place
    assert "model was not ready (HTTP 404" in healed["lastReload"] and f"version {version}" in healed["lastReload"]
    assert httpx.get(f"{dep['url']}/v2/models/iris/ready", timeout=30).status_code == 200
    assert infer() == version
    text = mlplane(state_dir, "status")
    assert "1 reloads" in text.stdout and "model was not ready" in text.stderr


def test_an_unloaded_triton_model_is_noticed_and_reloaded(platform):
    state_dir = platform["dir"]
    dep = _deployment(state_dir, "tri")
    infer = _clients(dep)["tri/grpc"]
    assert infer() == "1"
    key = StatePaths(state_dir).control_key_file.read_text().strip()
    r = httpx.post(f"{dep['url']}/v2/repository/models/tri/unload", headers={TRITON_CONTROL_HEADER: key}, timeout=60)
    assert r.status_code == 200, r.text
    healed = wait_for(lambda: (d := _deployment(state_dir, "tri"))["reloads"] == 1 and d["status"] == "ready"
                      and d, 180, "the supervisor to reload the unloaded model")
    assert healed["pid"] == dep["pid"] and "model was not ready (HTTP 400" in healed["lastReload"]
    assert httpx.get(f"{dep['url']}/v2/models/tri/ready", timeout=30).status_code == 200
    assert infer() == "1"


def test_a_refused_promote_moves_the_alias_back_and_says_why(platform):
    state_dir, tracking = platform["dir"], platform["tracking"]
    with tracking_uris(tracking), mlflow.start_run():  # MLflow's global URIs are restored afterwards
        info = mlflow.pyfunc.log_model(name="model", python_model=Unloadable(), registered_model_name="iris",
                                       pip_requirements=["numpy"])
    bad = str(info.registered_model_version)
    before = _deployment(state_dir, "iris")
    assert before["servedVersion"] == "1"
    out = mlplane(state_dir, "promote", "iris", "--version", bad, check=False)
    assert out.returncode == 1
    assert f"refused version {bad}" in out.stderr and "still serving version 1" in out.stderr, out.stderr
    assert "'iris@champion' is back on version 1" in out.stderr
    assert MlflowClient(tracking).get_model_version_by_alias("iris", "champion").version == "1"
    after = _deployment(state_dir, "iris")
    assert after["status"] == "ready" and after["servedVersion"] == "1" and after["error"] is None
    assert _clients(after)["iris/grpc"]() == "1"
    # A good promote still works, and moves the alias.
    mlplane(state_dir, "promote", "iris", "--version", "2")
    assert MlflowClient(tracking).get_model_version_by_alias("iris", "champion").version == "2"


def test_up_after_a_supervisor_crash_adopts_healthy_servers_without_a_failed_request(platform):
    state_dir = platform["dir"]
    before = status(state_dir)
    supervisor = before["supervisor"]["pid"]
    deps = {name: _deployment(state_dir, name) for name in ("iris", "tri")}
    # Triton with a gRPC port serves inference over gRPC only (its HTTP inference API is closed).
    calls = {**_clients(deps["iris"]), "tri/grpc": _clients(deps["tri"])["tri/grpc"]}
    up: list = []

    def crash_and_up() -> None:
        os.kill(supervisor, signal.SIGKILL)
        wait_for(lambda: mlplane(state_dir, "status", check=False).returncode == 1, 30, "the supervisor to be gone")
        up.append(mlplane(state_dir, "up"))

    results = _under_load(crash_and_up, calls)
    assert results["errors"] == [], results["errors"][:5]
    assert {label for label, _ in results["ok"]} == set(calls)
    after = status(state_dir)
    assert after["supervisor"]["pid"] != supervisor and after["phase"] == "running"
    for name, dep in deps.items():
        now = after["deployments"][name]
        assert (now["pid"], now["restarts"], now["status"]) == (dep["pid"], dep["restarts"], "ready"), name
        assert now["url"] == dep["url"] and now["grpc"] == dep["grpc"]
    assert after["deployments"]["iris"]["servedVersion"] == "2"  # the saved deployment is back, on its version
    assert after["components"]["mlflow"]["pid"] == before["components"]["mlflow"]["pid"]
    assert "Traceback" not in up[0].stderr and after["restoreErrors"] == {}
    # Adopted servers are still supervised: a crash of one is noticed and it comes back.
    os.kill(deps["iris"]["pid"], signal.SIGKILL)
    back = wait_for(lambda: (d := _deployment(state_dir, "iris"))["status"] == "ready"
                    and d["pid"] != deps["iris"]["pid"] and d, 120, "the adopted server to be restarted")
    assert back["restarts"] == deps["iris"]["restarts"] + 1
    assert _clients(back)["iris/http"]() == "2"


def test_a_saved_deployment_that_cannot_be_restored_is_listed_as_failed(platform):
    state_dir = platform["dir"]
    ghost = state_dir / "deployments" / "ghost.yaml"
    ghost.write_text("apiVersion: mlplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: ghost}\n"
                     "spec: {model: 'models:/ghost@champion'}\n")
    os.kill(status(state_dir)["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: mlplane(state_dir, "status", check=False).returncode == 1, 30, "the supervisor to be gone")
    up = mlplane(state_dir, "up")
    assert "deployment ghost was not restored" in up.stderr and "mlplane undeploy ghost" in up.stderr
    text = mlplane(state_dir, "status")
    assert "ghost" in text.stdout and "failed" in text.stdout and "ghost: failed:" in text.stderr
    assert ghost.exists()  # kept: fixing the cause and running `up` again brings it back
    mlplane(state_dir, "undeploy", "ghost")
    assert not ghost.exists() and "ghost" not in status(state_dir)["restoreErrors"]
    assert status(state_dir)["deployments"]["iris"]["status"] == "ready"


def test_up_reset_state_starts_clean_and_leaves_no_orphan(platform):
    state_dir = platform["dir"]
    before = status(state_dir)
    old = [psutil.Process(before["deployments"][n]["pid"]) for n in ("iris", "tri")]
    os.kill(before["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: mlplane(state_dir, "status", check=False).returncode == 1, 30, "the supervisor to be gone")
    up = mlplane(state_dir, "up", "--reset-state", "--timeout", "600", timeout=700)  # everything starts anew
    assert "moved aside: state.json" in up.stderr and "moved aside: ports.json" in up.stderr
    after = status(state_dir)
    assert after["deployments"]["iris"]["status"] == "ready" and after["deployments"]["tri"]["status"] == "ready"
    deadline = time.monotonic() + 60
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in old) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in old), "orphaned servers"
