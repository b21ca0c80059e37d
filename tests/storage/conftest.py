"""Fixtures: real MLflow servers (proxied artifacts; S3 artifacts on moto's S3 endpoint) with the iris model
registered as users do (`mlplane_pipelines.iris.train_and_register`). Everything listens on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlplane._generated import REPO_ROOT
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import mlflow_process
from mlplane.runtime.local.process import free_port, spawn, stop_tree

sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from platform_helpers import wait_http_ready

HOST = "127.0.0.1"
BUCKET = "mlplane-artifacts"


@dataclass
class Mlflow:
    url: str
    artifacts: Path | None = None


@pytest.fixture(scope="package")
def proxied_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """MLflow proxying its artifact store (`--artifacts-destination`), as the chart's default `pvc` store does."""
    from mlplane_pipelines.iris import train_and_register

    paths = StatePaths(tmp_path_factory.mktemp("mlflow-proxied"))
    port = free_port(HOST)
    spec = mlflow_process(paths, HOST, port)
    proc = spawn(spec)
    try:
        url = f"http://{HOST}:{port}"
        wait_http_ready(spec.ready_url, proc, spec.log)
        train_and_register(url, name="iris", alias="champion")
        yield Mlflow(url, paths.mlflow_dir / "artifacts")
    finally:
        stop_tree(proc.pid)


@pytest.fixture(scope="package")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback with one bucket; AWS_* test credentials in the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port(HOST)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    endpoint = f"http://{HOST}:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="package")
def s3_mlflow(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """MLflow as the chart runs it with `artifactStore.type: s3`: `--default-artifact-root s3://…`,
    `--no-serve-artifacts`; clients (the operator, the training job) talk to S3 themselves."""
    from mlplane_pipelines.iris import train_and_register

    root = tmp_path_factory.mktemp("mlflow-s3")
    port = free_port(HOST)
    log = root / "mlflow.log"
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", f"s3://{BUCKET}/mlflow", "--no-serve-artifacts", "--host", HOST,
             "--port", str(port), "--workers", "1"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    saved = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint  # the client side writes to S3 itself
    try:
        url = f"http://{HOST}:{port}"
        wait_http_ready(f"{url}/health", proc, log)
        train_and_register(url, name="iris", alias="champion")
        yield Mlflow(url)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_S3_ENDPOINT_URL", None)
        else:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = saved
        stop_tree(proc.pid)


ADMIN = ("mlplane-admin", "admin-Pa55word-1")
READER = ("mlplane-reader", "reader-Pa55word-2")
WRITER = ("mlplane-writer", "writer-Pa55word-3")


@pytest.fixture(scope="package")
def auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """MLflow as the chart runs it with `mlflow.auth.enabled` on the default `pvc` store: its artifact proxy
    behind basic auth (`--app-name mlplane-auth`), an admin, a writer and a read-only reader; iris registered as
    the admin."""
    from mlplane_pipelines.iris import train_and_register

    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port(HOST)
    log = root / "mlflow.log"
    users = {"MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
             "MLPLANE_MLFLOW_READER_USERNAME": READER[0], "MLPLANE_MLFLOW_READER_PASSWORD": READER[1],
             "MLPLANE_MLFLOW_WRITER_USERNAME": WRITER[0], "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER[1]}
    env = {**os.environ, **users, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--serve-artifacts", f"--artifacts-destination={root / 'artifacts'}", "--app-name=mlplane-auth",
             "--host", HOST, "--port", str(port), "--workers", "1"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        url = f"http://{HOST}:{port}"
        wait_http_ready(f"{url}/health", proc, log)
        os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN[0], MLFLOW_TRACKING_PASSWORD=ADMIN[1])  # the operator's
        train_and_register(url, name="iris", alias="champion")
        yield Mlflow(url, root / "artifacts")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_tree(proc.pid)
