"""The operator reads the Platform the chart makes with `mlflow.auth.enabled` and gives the pods it creates
their MLflow users by reference: the RayService's containers the reader, the ingestion CronJob the writer."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from operator_harness import Harness, wait_for

from mlplane.auth.mlflow import PASSWORD_ENV, USERNAME_ENV
from mlplane.runtime.local.process import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "charts"))
from chart_helpers import find, objects, render

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUTH = {"enabled": True, "adminPassword": "admin-Pa55word-1", "writerPassword": "writer-Pa55word-3",
        "readerPassword": "reader-Pa55word-2"}


def chart_platform_spec() -> dict:
    """The spec of the Platform the chart installs with auth on and a scheduled collection."""
    vector_store = {"enabled": True, "backend": "milvus", "uri": f"http://127.0.0.1:{free_port('127.0.0.1')}",
                    "collections": [{"name": "docs", "source": "/corpus", "schedule": "@daily"}]}
    objs = objects(render({"mlflow": {"auth": AUTH}, "platform": {"vectorStore": vector_store}}))
    return find(objs, "Platform", "default")["spec"]


def refs(secret: str) -> dict:
    return {USERNAME_ENV: {"name": USERNAME_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
            PASSWORD_ENV: {"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}}


def mlflow_env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", []) if e["name"] in (USERNAME_ENV, PASSWORD_ENV)}


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def cleanup(harness: Harness) -> AsyncIterator[None]:
    harness.created.clear()
    yield
    await harness.delete_created()


async def test_the_operator_gives_ray_pods_the_reader_and_ingest_jobs_the_writer(harness: Harness) -> None:
    spec = chart_platform_spec()
    assert spec["tracking"]["credentials"]["reader"]["secret"] == "mlplane-mlflow-reader"
    await harness.create_platform("chart", spec)
    await wait_for(lambda: harness.platform_status("chart").get("observedGeneration") == 1, "chart reconciled")
    cron = await wait_for(lambda: harness.platform_children("chart").get("CronJob"), "the ingestion CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert mlflow_env(container) == refs("mlplane-mlflow-writer")
    flags = container["args"]
    assert flags[flags.index("--tracking-uri") + 1] == harness.operator.config.tracking_uri  # embedded: the chart's

    await harness.create("creds-rag", {"model": "models:/iris@champion", "platform": "chart", "runtime": "ray",
                                       "retrieval": {"collection": "docs"}, "rag": {}})
    await wait_for(lambda: harness.status("creds-rag").get("servedVersion") == "1", "creds-rag served")
    ray = harness.children("creds-rag")["RayService"]
    cluster = ray["spec"]["rayClusterConfig"]
    containers = [c for g in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
                  for c in g["template"]["spec"]["containers"]]
    assert len(containers) >= 3
    for container in containers:
        assert mlflow_env(container) == refs("mlplane-mlflow-reader")
    assert "reader-Pa55word-2" not in str(ray) and "admin-Pa55word-1" not in str(cron)


async def test_a_platform_without_credentials_gives_none(harness: Harness) -> None:
    await harness.create("plain-rag", {"model": "models:/iris@champion", "runtime": "ray", "rag": {}})
    await wait_for(lambda: harness.status("plain-rag").get("servedVersion") == "1", "plain-rag served")
    cluster = harness.children("plain-rag")["RayService"]["spec"]["rayClusterConfig"]
    for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
        for container in group["template"]["spec"]["containers"]:
            assert mlflow_env(container) == {}
