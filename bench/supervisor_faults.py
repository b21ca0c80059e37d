"""Benchmark: supervisor faults of issue 13 (findings 3, 6, 7) on a real platform, under load.

    .venv/bin/python bench/supervisor_faults.py

Starts one platform (``mlplane up`` in a temporary state dir), registers two iris versions, deploys
``iris`` (kserve, ``models:/iris@champion``) and ``tri`` (triton, ``models:/iris/1``), and runs one
client thread per deployment and protocol (Triton: gRPC, its only inference protocol; tritonclient,
persistent connections, one request at a time, nothing retried) through each fault:

* ``kill -9`` of the supervisor, then ``mlplane up`` (finding 7: servers are adopted);
* the model unloaded through the server's private control (kserve control socket, Triton's restricted API),
  behind the supervisor's back (finding 3: the supervisor notices and reloads);
* a promote to a version the server refuses (finding 6: the alias is moved back);
* ``kill -9`` of a model server, for reference (the supervisor's restart).

For each: requests sent and failed during the fault, and seconds from the fault until every endpoint
answers again (the last failed request, 0 when none failed). Writes ``## Reliability: supervisor faults``
in bench/RESULTS.md next to the figures the issue measured before. Always runs ``mlplane down``.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests" / "e2e"), str(ROOT / "examples" / "iris")]
from platform_helpers import mlplane, status, wait_for  # noqa: E402

from _results import run_context, write_section  # noqa: E402

HEADING = "## Reliability: supervisor faults"
BEFORE = {  # issue 13, measured before these changes
    "kill -9 supervisor, `mlplane up`": "1,622 failed, 60 s outage (servers killed, restart counts reset)",
    "model unloaded (kserve)": "endpoint down for good; health 200, `status` ready",
    "model unloaded (triton)": "endpoint down for good; health 200, `status` ready",
    "refused promote (kserve)": "0 failed, but alias left on the bad version; next `up` dropped the deployment",
}
UNLOADABLE = """
import os

import mlflow.pyfunc
import numpy as np


class Unloadable(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        if not os.environ.get("MLPLANE_BENCH_LOADABLE"):
            raise RuntimeError("this version cannot be loaded")

    def predict(self, context, model_input, params=None):
        return np.zeros(len(model_input))


mlflow.models.set_model(Unloadable())
"""
PLATFORM = ("apiVersion: mlplane.io/v1alpha1\nkind: Platform\nmetadata: {name: bench-faults}\n"
            "spec: {serving: {grpc: true}}\n")
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


def _calls(state_dir: Path) -> dict[str, Callable[[], object]]:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from client import SAMPLES, _inputs

    calls: dict[str, Callable[[], object]] = {}
    for name in ("iris", "tri"):
        dep = status(state_dir)["deployments"][name]
        http = httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"), network_timeout=120)
        grpc = grpcclient.InferenceServerClient(url=dep["grpc"])
        if name != "tri":  # Triton with a gRPC port serves inference over gRPC only
            calls[f"{name}/http"] = lambda h=http, n=name: h.infer(n, _inputs(httpclient, SAMPLES))
        calls[f"{name}/grpc"] = lambda g=grpc, n=name: g.infer(n, _inputs(grpcclient, SAMPLES), client_timeout=120)
    return calls


def _under_load(state_dir: Path, fault: Callable[[], None], recovered: Callable[[], bool]) -> tuple[int, int, float]:
    """(requests sent, failed, seconds from the fault to the last failure) while ``fault`` runs."""
    calls = _calls(state_dir)
    sent, failures = [0], []
    stop = threading.Event()

    def loop(call: Callable[[], object]) -> None:
        while not stop.is_set():
            sent[0] += 1
            try:
                call()
            except Exception:
                failures.append(time.monotonic())
                time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(c,)) for c in calls.values()]
    for t in threads:
        t.start()
    time.sleep(2.0)
    start = time.monotonic()
    try:
        fault()
        wait_for(recovered, 300, "recovery")
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    return sent[0], len(failures), (max(failures) - start if failures else 0.0)


def main() -> None:
    import mlflow

    from mlplane.registry import register_model
    from mlplane.runtime.local.paths import StatePaths
    from mlplane.runtime.local.plan import TRITON_CONTROL_HEADER
    from mlplane_pipelines.iris import train_and_register

    base = Path(tempfile.mkdtemp(prefix="mlplane-bench-faults-"))
    state_dir = base / ".mlplane"
    (base / "platform.yaml").write_text(PLATFORM)
    (base / "deployments.yaml").write_text(DEPLOYMENTS)
    rows = []
    try:
        mlplane(state_dir, "up", "-f", str(base / "platform.yaml"), "--timeout", "600", timeout=700)
        tracking = status(state_dir)["trackingUri"]
        train_and_register(tracking, name="iris", C=1.0, alias="champion")
        train_and_register(tracking, name="iris", C=0.02)
        mlplane(state_dir, "deploy", "-f", str(base / "deployments.yaml"))
        paths = StatePaths(state_dir)

        def ready(name: str) -> bool:
            d = status(state_dir)["deployments"].get(name) or {}
            return d.get("status") == "ready" and httpx.get(f"{d['url']}/v2/models/{name}/ready").status_code == 200

        def all_ready() -> bool:
            return mlplane(state_dir, "status", check=False).returncode == 0 and ready("iris") and ready("tri")

        def crash_supervisor() -> None:
            os.kill(status(state_dir)["supervisor"]["pid"], signal.SIGKILL)
            wait_for(lambda: mlplane(state_dir, "status", check=False).returncode == 1, 30, "the supervisor to go")
            mlplane(state_dir, "up", "-f", str(base / "platform.yaml"), "--timeout", "600", timeout=700)

        def unload_kserve() -> None:
            transport = httpx.HTTPTransport(uds=str(paths.control_socket("iris")))
            with httpx.Client(transport=transport, timeout=60) as control:
                control.post("http://control/v2/repository/models/iris/unload").raise_for_status()
            time.sleep(1.0)

        def unload_triton() -> None:
            url = status(state_dir)["deployments"]["tri"]["url"]
            key = paths.control_key_file.read_text().strip()
            httpx.post(f"{url}/v2/repository/models/tri/unload", headers={TRITON_CONTROL_HEADER: key},
                       timeout=60).raise_for_status()
            time.sleep(1.0)

        promote_out: list = []

        def refused_promote() -> None:
            # A pyfunc from code that loads only where MLPLANE_BENCH_LOADABLE is set: here, not in the servers
            # (the supervisor was started without it), so the server refuses the version.
            code = base / "unloadable.py"
            code.write_text(UNLOADABLE)
            os.environ["MLPLANE_BENCH_LOADABLE"] = "1"
            try:
                registration = register_model(
                    tracking, "iris", experiment="bench-supervisor-faults",
                    log_model=lambda name: mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                                                   registered_model_name=name,
                                                                   pip_requirements=["numpy"]))
            finally:
                del os.environ["MLPLANE_BENCH_LOADABLE"]
            promote_out.append(mlplane(state_dir, "promote", "iris", "--version",
                                       registration.version, check=False))

        def kill_server() -> None:
            os.kill(status(state_dir)["deployments"]["iris"]["pid"], signal.SIGKILL)
            time.sleep(1.0)

        for label, fault in (("kill -9 supervisor, `mlplane up`", crash_supervisor),
                             ("model unloaded (kserve)", unload_kserve),
                             ("model unloaded (triton)", unload_triton),
                             ("refused promote (kserve)", refused_promote),
                             ("kill -9 model server (kserve)", kill_server)):
            sent, failed, seconds = _under_load(state_dir, fault, all_ready)
            note = ""
            if promote_out and label.startswith("refused"):
                alias = mlflow.MlflowClient(tracking).get_model_version_by_alias("iris", "champion").version
                note = f"; promote exit {promote_out[0].returncode}, alias back on version {alias}"
            rows.append(f"| {label} | {BEFORE.get(label, '—')} | {sent} sent, {failed} failed{note} | "
                        f"{seconds:.1f} |")
            print(rows[-1], flush=True)
    finally:
        mlplane(state_dir, "down", check=False)
    body = "\n".join([
        run_context() + " One client thread per deployment and protocol (kserve `iris` over HTTP and gRPC, triton "
        "`tri` over gRPC, its only inference protocol), one request at a time, nothing retried. Recovery: "
        "seconds from the fault to the last failed request. `python bench/supervisor_faults.py`.",
        "",
        "| fault | before (issue 13) | after: requests | after: seconds to recover |",
        "|---|---|---|---|",
        *rows,
        "",
        "An unloaded model fails requests until the supervisor's readiness check (every 2 s, two \"not ready\" "
        "answers) reloads it; a killed model server fails them until its restart is ready. Recovery from an unload "
        "or a restart is the model's load time in the server (Triton's Python backend is the slow one); on a shared, "
        "loaded machine it is longer.",
    ])
    write_section(HEADING, body)


if __name__ == "__main__":
    main()
