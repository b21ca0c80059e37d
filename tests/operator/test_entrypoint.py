"""`python -m mlplane_operator`, the chart's command: importing the package does nothing; running it does all.

Each case runs a real Python process: one imports the package and looks at kopf's default registry; one
starts the operator with a bad setting; one starts the operator as the chart does, against kmock (the API
server, over loopback with a kubeconfig), and watches it reconcile a Platform and answer its liveness probe.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import kmock
import pytest
import pytest_asyncio
import yaml
from operator_apiserver import ApiServer
from operator_harness import PLATFORM, VERBS, Harness, wait_for

from mlplane._generated import REPO_ROOT
from mlplane.runtime.local.process import free_port
from mlplane_operator.kube import CHILD_KINDS, PLATFORM_CHILD_KINDS

HOST = "127.0.0.1"
# What kopf's default registry holds: every handler, and the ids of the activity handlers (kopf's own
# fallback logins are there before anything registers).
REGISTRY_CODE = """
import json, sys
import kopf
if sys.argv[1] == "after-import":
    import mlplane_operator, mlplane_operator.handlers, mlplane_operator.config
r = kopf.get_default_registry()
print(json.dumps({
    "activities": sorted(h.id for h in r._activities.get_all_handlers()),
    "resource": [str(h.id) for reg in (r._watching, r._changing, r._spawning, r._webhooks, r._indexing)
                 for h in reg.get_all_handlers()],
}))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without operator settings or cluster access, plus `extra`."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLPLANE_", "MLFLOW_", "KUBECONFIG", "KUBERNETES_", "POD_NAMESPACE"))}
    return {**base, **extra}


def python(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def test_importing_the_package_registers_nothing_and_reads_no_environment(tmp_path: Path) -> None:
    # A setting the operator would refuse: the import must not even read it.
    env = clean_env(MLPLANE_RESYNC_SECONDS="soon", HOME=str(tmp_path))
    pristine = python("-c", REGISTRY_CODE, "kopf-only", env=env, cwd=tmp_path)
    imported = python("-c", REGISTRY_CODE, "after-import", env=env, cwd=tmp_path)
    assert pristine.returncode == 0, pristine.stderr[-3000:]
    assert imported.returncode == 0, imported.stderr[-3000:]
    found = json.loads(imported.stdout.strip().splitlines()[-1])
    assert found["resource"] == []  # no reconcile, timer, delete or Platform handler
    assert "startup" not in " ".join(found["activities"])
    # Exactly what kopf itself puts there (its fallback logins), nothing of mlplane's.
    assert found == json.loads(pristine.stdout.strip().splitlines()[-1])


def test_a_bad_setting_stops_the_operator_with_exit_2_naming_the_variable(tmp_path: Path) -> None:
    done = python("-m", "mlplane_operator", env=clean_env(MLPLANE_RETRY_SECONDS="0", HOME=str(tmp_path)),
                  cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "MLPLANE_RETRY_SECONDS" in done.stderr and "must be at least 0.1" in done.stderr
    assert "Traceback" not in done.stderr
    done = python("-m", "mlplane_operator", env=clean_env(MLPLANE_RESYNC_SECONDS="soon", HOME=str(tmp_path)),
                  cwd=tmp_path)
    assert done.returncode == 2 and "MLPLANE_RESYNC_SECONDS: got 'soon'; expected a number" in done.stderr


def test_the_help_names_the_liveness_default(tmp_path: Path) -> None:
    done = python("-m", "mlplane_operator", "--help", env=clean_env(HOME=str(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "python -m mlplane_operator" in done.stdout and "http://0.0.0.0:8080/healthz" in done.stdout


@pytest_asyncio.fixture(loop_scope="function")
async def api_server(tmp_path: Path) -> AsyncIterator[tuple[ApiServer, Path]]:
    """kmock with mlplane's kinds (as tests/operator/conftest.py sets it up) and a kubeconfig naming it."""
    api = ApiServer()
    async with api, kmock.Server(api) as server:
        api.resources.load_bundled()
        for k in ((None, "mlplane.io", "v1alpha1", "modeldeployments", "ModelDeployment"),
                  (None, "mlplane.io", "v1alpha1", "platforms", "Platform"),
                  *((None, c.group, c.version, c.plural, c.kind) for c in (*CHILD_KINDS, *PLATFORM_CHILD_KINDS))):
            _, group, version, plural, kind = k
            if group:
                api.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                    kind=kind, namespaced=True, verbs=VERBS, subresources={"status"})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}]}))
        yield api, kubeconfig


@pytest.mark.asyncio(loop_scope="function")
async def test_the_module_runs_the_operator_with_its_handlers_and_liveness(
        api_server: tuple[ApiServer, Path], tmp_path: Path) -> None:
    api, kubeconfig = api_server
    harness = Harness(api, None, None, None)  # type: ignore[arg-type]  # only the kubectl side
    port = free_port(HOST)
    log = (tmp_path / "operator.log").open("w+")
    env = clean_env(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path), POD_NAMESPACE="mlplane",
                    MLPLANE_RESYNC_SECONDS="1", MLPLANE_RETRY_SECONDS="1", MLPLANE_PROBE_TIMEOUT_SECONDS="2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mlplane_operator", f"--liveness=http://{HOST}:{port}/healthz", "--verbose",
        env=env, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        log.flush()
        return (tmp_path / "operator.log").read_text()[-4000:]

    try:
        await harness.create_platform("default", {})
        # The Platform handlers registered by `python -m` reconcile it: status written with its generation.
        status = await wait_for(lambda: (harness.get(PLATFORM, "default") or {}).get("status", {})
                                .get("observedGeneration") == 1 or proc.returncode is not None,
                                "the operator to reconcile the Platform", timeout=180)
        assert proc.returncode is None, output()
        assert status is True
        conditions = {c["type"]: c for c in harness.platform_status("default")["conditions"]}
        assert conditions["TrackingReachable"]["reason"] == "NoTrackingUri"  # no MLFLOW_TRACKING_URI given

        async with httpx.AsyncClient() as client:  # kopf's liveness endpoint, at the --liveness URL
            answer = await client.get(f"http://{HOST}:{port}/healthz", timeout=10)
        assert answer.status_code == 200, output()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet sends; kopf stops gracefully
        code = await asyncio.wait_for(proc.wait(), timeout=120)
        log.close()
    assert code == 0, output()
