"""Driving a real platform from tests the way a user does: the `mlplane` CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

# MLflow's URIs in the test process (mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI) belong to
# whichever test set them last; the CLI run against `state_dir` must use that platform's own MLflow.
_FOREIGN_MLFLOW = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def mlplane(state_dir: Path, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_MLFLOW}
    proc = subprocess.run([sys.executable, "-m", "mlplane", *args], text=True, capture_output=True,
                          timeout=timeout, env={**env, "MLPLANE_STATE_DIR": str(state_dir), "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"mlplane {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def status(state_dir: Path) -> dict:
    return json.loads(mlplane(state_dir, "status", "-o", "json").stdout)


def wait_http_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until `url` answers 200 (a loaded machine can take minutes); fails with the log's tail if `proc` dies."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def platform_processes(state_dir: Path) -> list[psutil.Process]:
    """Every process whose command line or environment points at this state dir or its ports."""
    found = []
    for p in psutil.process_iter(["cmdline", "pid"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if str(state_dir) in cmd or ("mlplane.serving" in cmd and str(state_dir) in str(p.environ())):
                found.append(p)
        except psutil.Error:
            continue
    return found


def promote_under_load(state_dir: Path, name: str, version: str, infer: Callable[[str], str],
                       protocols: tuple[str, ...] = ("http", "http", "grpc", "grpc"),
                       ) -> tuple[subprocess.CompletedProcess, dict]:
    """`mlplane promote` while one client thread per protocol loops ``infer(proto) -> served version``.

    Returns the promote's result and ``{"versions": [...], "errors": [...]}`` in completion order.
    """
    results: dict = {"versions": [], "errors": []}
    stop = threading.Event()

    def loop(proto: str) -> None:
        while not stop.is_set():
            try:
                results["versions"].append(infer(proto))
            except Exception as exc:  # every failure counts
                results["errors"].append(f"{proto}: {exc!r}")

    threads = [threading.Thread(target=loop, args=(proto,)) for proto in protocols]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        out = mlplane(state_dir, "promote", name, "--version", version)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    return out, results
