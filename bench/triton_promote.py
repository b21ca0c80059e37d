"""Benchmark: the worst request latency while a version switch runs, Triton vs the kserve runtime.

    .venv/bin/python bench/triton_promote.py [--clients 4]

Starts one platform (``mlplane up`` in a temporary state dir), registers two iris versions, deploys
``iris-k`` (kserve) and ``iris-t`` (triton, dynamic batching) on version 1, and while clients loop, each
with a 10 s timeout (half gRPC inference, half HTTP: inference on kserve, readiness + metadata on Triton,
whose HTTP inference is closed to clients — docs/triton-limits.md):

* ``mlplane promote iris-k --version 2`` (kserve: the load on its control socket),
* ``mlplane promote iris-t --version 2`` (Triton now: the supervisor's gRPC ``RepositoryModelLoad``),
* the same Triton reload asked over HTTP (``POST /v2/repository/models/iris-t/load`` with the control
  key), the way the supervisor switched Triton before: that call holds one of Triton's HTTP threads for
  the whole load, and the connections on it wait.

Reports the failures and the worst latency of each switch, as a ratio to kserve's worst case in the
same run, in bench/RESULTS.md under ``## Triton: promotion under load``. Always runs ``mlplane down``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from _results import Report, run_context, write_section
from mlplane_pipelines.iris import train_and_register

SECTION = "## Triton: promotion under load"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TIMEOUT_S = 10.0
PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: bench}
spec:
  serving: {host: 127.0.0.1, grpc: true}
"""
DEPLOYMENTS = {
    "iris-k": "spec: {model: 'models:/iris/1', runtime: kserve}\n",
    "iris-t": ("spec:\n  model: 'models:/iris/1'\n  runtime: triton\n"
               "  batching: {maxBatchSize: 32, maxLatencyMs: 2}\n"),
}


def mlplane(state_dir: Path, *args: str, timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "mlplane", *args], text=True, capture_output=True,
                          timeout=timeout, env={**os.environ, "MLPLANE_STATE_DIR": str(state_dir),
                                                "COLUMNS": "200"})
    if proc.returncode != 0:
        raise RuntimeError(f"mlplane {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _grpc_request(dep: dict, name: str, batched: bool):
    client = grpcclient.InferenceServerClient(url=dep["grpc"])
    shape = [1, 1] if batched else [1]
    inputs = []
    for feature in FEATURES:
        inp = grpcclient.InferInput(feature, shape, "FP64")
        inp.set_data_from_numpy(np.full(shape, 5.0))
        inputs.append(inp)
    return lambda: client.infer(name, inputs, client_timeout=TIMEOUT_S)


def _http_request(dep: dict, name: str, runtime: str):
    if runtime == "kserve":
        client = httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"), network_timeout=TIMEOUT_S,
                                                  connection_timeout=TIMEOUT_S)
        inputs = []
        for feature in FEATURES:
            inp = httpclient.InferInput(feature, [1], "FP64")
            inp.set_data_from_numpy(np.full(1, 5.0))
            inputs.append(inp)
        return lambda: client.infer(name, inputs)
    session = httpx.Client(timeout=TIMEOUT_S)

    def poll() -> None:
        for path in (f"/v2/models/{name}/ready", f"/v2/models/{name}"):
            session.get(dep["url"] + path).raise_for_status()
    return poll


def under_load(dep: dict, name: str, runtime: str, clients: int, switch) -> dict:
    """Run ``switch()`` while ``clients`` loops call the deployment; latencies of the switch window."""
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    stop = threading.Event()

    def loop(make) -> None:
        call = make()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # every failure counts
                errors.append(repr(exc)[:200])
            samples.append((start, time.perf_counter() - start))

    makers = [lambda: _grpc_request(dep, name, runtime == "triton")] * (clients // 2)
    makers += [lambda: _http_request(dep, name, runtime)] * (clients - clients // 2)
    threads = [threading.Thread(target=loop, args=(m,)) for m in makers]
    for t in threads:
        t.start()
    time.sleep(2.0)
    began = time.perf_counter()
    switch()
    ended = time.perf_counter()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    window = [d for s, d in samples if began - 1.0 <= s <= ended + 1.0]
    return {"requests": len(window), "failed": len(errors), "worst_s": max(window), "switch_s": ended - began,
            "errors": errors[:3]}


def http_reload(state_dir: Path, dep: dict, name: str) -> None:
    """The switch as the supervisor sent it before: Triton's HTTP model-repository API with the key."""
    key = (state_dir / "control" / "model-control.key").read_text().strip()
    config = state_dir / "triton" / name / "models" / name / "config.pbtxt"
    os.utime(config)  # a changed repository: Triton loads the version again, as for a new one
    r = httpx.post(f"{dep['url']}/v2/repository/models/{name}/load", json={}, timeout=900,
                   headers={"mlplane-control-key": key})
    if r.status_code != 200:
        raise RuntimeError(f"HTTP load answered {r.status_code}: {r.text}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-promote-") as tmp:
        state_dir = Path(tmp) / ".mlplane"
        (Path(tmp) / "platform.yaml").write_text(PLATFORM)
        mlplane(state_dir, "up", "-f", str(Path(tmp) / "platform.yaml"))
        try:
            tracking = json.loads(mlplane(state_dir, "status", "-o", "json"))["trackingUri"]
            train_and_register(tracking, name="iris", C=1.0)
            train_and_register(tracking, name="iris", C=0.02)
            for name, spec in DEPLOYMENTS.items():
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(f"apiVersion: mlplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}}}\n"
                                + spec)
                mlplane(state_dir, "deploy", "-f", str(path))
            deps = json.loads(mlplane(state_dir, "status", "-o", "json"))["deployments"]
            runs = {
                "kserve: mlplane promote": under_load(
                    deps["iris-k"], "iris-k", "kserve", args.clients,
                    lambda: mlplane(state_dir, "promote", "iris-k", "--version", "2")),
                "triton: mlplane promote (gRPC load, now)": under_load(
                    deps["iris-t"], "iris-t", "triton", args.clients,
                    lambda: mlplane(state_dir, "promote", "iris-t", "--version", "2")),
                "triton: the same reload over HTTP (before)": under_load(
                    deps["iris-t"], "iris-t", "triton", args.clients,
                    lambda: http_reload(state_dir, deps["iris-t"], "iris-t")),
            }
        finally:
            subprocess.run([sys.executable, "-m", "mlplane", "down"], capture_output=True, timeout=300,
                           env={**os.environ, "MLPLANE_STATE_DIR": str(state_dir)})

    kserve_worst = runs["kserve: mlplane promote"]["worst_s"]
    report = Report("switch", "requests in the window", "failed (10 s timeout)", "switch took",
                    "worst latency", "worst / kserve's worst")
    for label, r in runs.items():
        ratio = r["worst_s"] / kserve_worst
        goal, ok = ("report", None) if label.startswith("kserve") else (
            ("≤ 5 and 0 failed", ratio <= 5 and r["failed"] == 0) if "now" in label else ("report", None))
        report.add(label, str(r["requests"]), str(r["failed"]), f"{r['switch_s']:.1f} s",
                   f"{r['worst_s'] * 1000:.0f} ms", ratio=ratio, goal=goal, ok=ok)
    body = (f"{run_context()} `bench/triton_promote.py --clients {args.clients}`: half the clients infer over "
            "gRPC, half call HTTP (inference on kserve; readiness and metadata on Triton, whose HTTP inference "
            "is closed to clients), each with a 10 s timeout. A switch's window is the switch ±1 s. "
            "Before, the supervisor asked Triton over HTTP, and the load held an HTTP thread: the requests on "
            "it waited for the whole load (issue 13: 8-9 s, 4 of 12,095 failed).\n\n"
            f"{report.markdown()}\n\n{report.verdict()}.")
    for label, r in runs.items():
        if r["errors"]:
            body += f"\n\n{label}, first failures: " + "; ".join(r["errors"])
    write_section(SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
