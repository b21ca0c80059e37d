"""Helpers for tests that run ``python -m mlplane.serving`` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlplane.runtime.local.process import free_port
from mlplane_pipelines.iris import FEATURES as IRIS_COLUMNS
from mlplane_pipelines.iris import load_data as iris_frame

__all__ = ["IRIS_COLUMNS", "ServerProcess", "free_port", "iris_frame", "save_iris_model", "start_server"]


def save_iris_model(path: Path, C: float) -> Path:
    """A LogisticRegression on iris saved as an MLflow model directory (no tracking server)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = iris_frame()
    model = LogisticRegression(C=C, max_iter=2000).fit(X, y.to_numpy())
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(X, model.predict(X)), pip_requirements=["scikit-learn"]
    )
    return path


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.http_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                    )
                try:
                    if (
                        client.get("/v2/health/ready").status_code == 200
                        and client.get(f"/v2/models/{name}/ready").status_code == 200
                    ):
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
        return self.proc.returncode


def start_server(
    name: str,
    model_uri: str,
    log_path: Path,
    *,
    version: str | None = "1",
    extra_args: Sequence[str] = (),
    module: str = "mlplane.serving",
) -> ServerProcess:
    http_port, grpc_port = free_port(), free_port()
    args = [sys.executable, "-m", module, "--name", name, "--model-uri", model_uri]
    if version is not None:
        args += ["--model-version", version]
    args += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), *extra_args]
    log = open(log_path, "wb")  # noqa: SIM115 - closed in ServerProcess.stop
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return ServerProcess(proc, http_port, grpc_port, log_path, log)
