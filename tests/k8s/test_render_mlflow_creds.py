"""The pods mlplane renders that talk to MLflow get its users from Secrets: RayService containers the reader,
ingestion Jobs the writer, as `secretKeyRef`s only; without `spec.tracking.credentials`, no credentials at all."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from mlplane.auth.mlflow import PASSWORD_ENV, USERNAME_ENV
from mlplane.k8s import ResolvedArtifact, render
from mlplane.k8s.ingest import render_ingest
from mlplane.k8s.mlflow_credentials import credential_env
from mlplane.k8s.resolve import in_cluster
from mlplane.spec import ModelDeployment, Platform

ARTIFACT = ResolvedArtifact(registry_version="3", storage_uri="mlflow-artifacts:/1/abc/artifacts/model")
CREDENTIALS = {"reader": {"secret": "mlflow-reader"},
               "writer": {"secret": "mlflow-writer", "usernameKey": "user", "passwordKey": "pass"}}
VECTOR_STORE = {"enabled": True, "backend": "milvus", "uri": "http://milvus.milvus.svc:19530",
                "collections": [{"name": "docs", "source": "/corpus", "schedule": "@daily"}]}


def platform(credentials: dict | None = None) -> Platform:
    tracking = {} if credentials is None else {"credentials": credentials}
    return Platform.model_validate({"metadata": {"name": "p", "namespace": "ml"},
                                    "spec": {"tracking": tracking, "vectorStore": VECTOR_STORE}})


def rag() -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "rag", "namespace": "ml"}, "spec": {
        "model": "models:/gen@champion", "runtime": "ray", "retrieval": {"collection": "docs"},
        "resources": {"gpus": 1}, "rag": {"embedder": {"model": "models:/emb@champion"}}}})


def ray_containers(p: Platform) -> list[dict]:
    (ray,) = render(rag(), p, ARTIFACT)
    cluster = ray["spec"]["rayClusterConfig"]
    return [c for g in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
            for c in g["template"]["spec"]["containers"]]


def ingest_containers(p: Platform) -> list[dict]:
    job, cron = render_ingest(p, "docs")
    return [job["spec"]["template"]["spec"]["containers"][0],
            cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]]


def mlflow_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", []) if e["name"].startswith("MLFLOW_TRACKING_")}


def test_ray_pods_read_as_the_reader_and_ingest_jobs_log_as_the_writer() -> None:
    p = platform(CREDENTIALS)
    containers = ray_containers(p)
    assert {c["name"] for c in containers} == {"ray-head", "ray-worker"} and len(containers) >= 3
    for container in containers:  # head and every worker group: Serve places replicas anywhere
        assert mlflow_env(container) == {
            USERNAME_ENV: {"name": USERNAME_ENV,
                           "valueFrom": {"secretKeyRef": {"name": "mlflow-reader", "key": "username"}}},
            PASSWORD_ENV: {"name": PASSWORD_ENV,
                           "valueFrom": {"secretKeyRef": {"name": "mlflow-reader", "key": "password"}}}}
    writer = {name: {"name": name, "valueFrom": {"secretKeyRef": {"name": "mlflow-writer", "key": key}}}
              for name, key in ((USERNAME_ENV, "user"), (PASSWORD_ENV, "pass"))}
    for container in ingest_containers(p):  # the Job and the CronJob's template
        assert mlflow_env(container) == writer
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]  # the rest of the env stays


def test_no_credentials_no_env() -> None:
    p = platform()
    for container in [*ray_containers(p), *ingest_containers(p)]:
        assert mlflow_env(container) == {}
    only_reader = platform({"reader": {"secret": "mlflow-reader"}})
    assert all(mlflow_env(c) for c in ray_containers(only_reader))
    assert all(mlflow_env(c) == {} for c in ingest_containers(only_reader))
    assert credential_env(None) == []


def test_credentials_are_references_never_values() -> None:
    p = platform(CREDENTIALS)
    for container in [*ray_containers(p), *ingest_containers(p)]:
        for entry in mlflow_env(container).values():
            assert "value" not in entry and set(entry["valueFrom"]) == {"secretKeyRef"}
        assert "mlflow-reader" not in " ".join(container.get("args", []))
    (ray,) = render(rag(), p, ARTIFACT)
    assert "mlflow-reader" not in ray["spec"]["serveConfigV2"] and "credentials" not in ray["spec"]["serveConfigV2"]


def test_the_cluster_platform_keeps_the_credentials() -> None:
    """Embedded tracking becomes the chart's MLflow (render, the operator): the users stay."""
    p = in_cluster(platform(CREDENTIALS), "http://mlplane-mlflow.mlplane.svc:5000")
    assert (p.spec.tracking.mode, p.spec.tracking.uri) == ("external", "http://mlplane-mlflow.mlplane.svc:5000")
    assert p.spec.tracking.credentials == platform(CREDENTIALS).spec.tracking.credentials
    (ray,) = render(rag(), p, ARTIFACT)
    app = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"][0]
    assert app["args"]["tracking_uri"] == "http://mlplane-mlflow.mlplane.svc:5000"
    assert all(mlflow_env(c) for c in ray_containers(p))
    flags = ingest_containers(p)[0]["args"]
    assert flags[flags.index("--tracking-uri") + 1] == "http://mlplane-mlflow.mlplane.svc:5000"
    assert all(mlflow_env(c) for c in ingest_containers(p))


@pytest.mark.parametrize(("credentials", "message"), [
    ({"reader": {"secret": "MLflow_Reader"}}, "DNS-1123"),
    ({"reader": {"secret": "r", "passwordKey": "pass word"}}, "must be a Secret key"),
    ({"writer": {}}, "secret"),
    ({"writer": {"secret": "w", "password": "inline"}}, "password"),  # no inline values
])
def test_invalid_credential_refs_are_refused(credentials: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        platform(credentials)
