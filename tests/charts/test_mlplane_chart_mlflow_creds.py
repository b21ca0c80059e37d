"""With `mlflow.auth.enabled`, the chart gives the pods mlplane renders their MLflow users (real Helm render):
a reader and a writer Secret in every serving namespace, named by the release Platform's
`spec.tracking.credentials`, and the NetworkPolicy lets those pods reach MLflow."""

from __future__ import annotations

import re

import helm_python
import pytest
from chart_helpers import NAMESPACE, Obj, find, objects, render
from test_mlplane_chart_policies import Pod, allowed, chart_pods, policies_of

from mlplane.auth.mlflow import PASSWORD_ENV, USERNAME_ENV
from mlplane.k8s import ResolvedArtifact
from mlplane.k8s import render as render_deployment
from mlplane.k8s.ingest import render_ingest
from mlplane.k8s.resolve import in_cluster
from mlplane.spec import ModelDeployment
from mlplane_operator import platform_plan

ADMIN_PW, WRITER_PW, READER_PW = "admin-Pa55word-1", "writer-Pa55word-3", "reader-Pa55word-2"
AUTH = {"enabled": True, "adminPassword": ADMIN_PW, "writerPassword": WRITER_PW, "readerPassword": READER_PW}
VECTOR_STORE = {"enabled": True, "backend": "milvus", "uri": "http://milvus.milvus.svc:19530",
                "collections": [{"name": "docs", "source": "/corpus", "schedule": "@daily"}]}
SERVING_NAMESPACES = ["team-a", "team-b"]
TRACKING_URI = f"http://mlplane-mlflow.{NAMESPACE}.svc:5000"


def chart(auth: Obj | None = None, **values: Obj) -> list[Obj]:
    return objects(render({"mlflow": {"auth": auth or AUTH}, "serving": {"namespaces": SERVING_NAMESPACES},
                           "platform": {"vectorStore": VECTOR_STORE}, **values}))


def secret(objs: list[Obj], name: str, namespace: str) -> Obj:
    found = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == name
             and o["metadata"]["namespace"] == namespace]
    assert len(found) == 1, (name, namespace)
    return found[0]


def rag(namespace: str) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "rag", "namespace": namespace}, "spec": {
        "model": "models:/gen@champion", "runtime": "ray", "retrieval": {"collection": "docs"}, "rag": {}}})


def ray_pods(objs: list[Obj], namespace: str) -> list[tuple[dict[str, str], Obj]]:
    """(pod labels, container) of the RayService the operator renders from the chart's Platform."""
    platform = in_cluster(platform_plan.parse(find(objs, "Platform", "default")), TRACKING_URI)
    (ray,) = render_deployment(rag(namespace), platform, ResolvedArtifact("1", "mlflow-artifacts:/1/a/artifacts/m"))
    cluster = ray["spec"]["rayClusterConfig"]
    return [(g["template"]["metadata"]["labels"], c) for g in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
            for c in g["template"]["spec"]["containers"]]


def ingest_pod(objs: list[Obj], namespace: str) -> tuple[dict[str, str], Obj]:
    """(pod labels, container) of the ingestion CronJob the operator makes for the chart's Platform."""
    platform = in_cluster(platform_plan.parse(find(objs, "Platform", "default")), TRACKING_URI)
    platform = platform.model_copy(update={"metadata": platform.metadata.model_copy(update={"namespace": namespace})})
    cron = next(o for o in render_ingest(platform, "docs") if o["kind"] == "CronJob")
    template = cron["spec"]["jobTemplate"]["spec"]["template"]
    return template["metadata"]["labels"], template["spec"]["containers"][0]


def env_from_secrets(container: Obj, objs: list[Obj], namespace: str) -> dict[str, str]:
    """The MLflow env as the kubelet fills it in `namespace`: each secretKeyRef looked up in the chart's Secrets."""
    out = {}
    for entry in container["env"]:
        if entry["name"] in (USERNAME_ENV, PASSWORD_ENV):
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = secret(objs, ref["name"], namespace)["stringData"][ref["key"]]
    return out


def test_reader_and_writer_secrets_in_every_serving_namespace() -> None:
    objs = chart()
    for ns in (NAMESPACE, *SERVING_NAMESPACES):
        reader, writer = secret(objs, "mlplane-mlflow-reader", ns), secret(objs, "mlplane-mlflow-writer", ns)
        assert reader["type"] == writer["type"] == "kubernetes.io/basic-auth"
        assert reader["stringData"] == {"username": "mlplane-reader", "password": READER_PW}
        assert writer["stringData"] == {"username": "mlplane-writer", "password": WRITER_PW}
    assert all(pw not in str(o) for pw in (ADMIN_PW, WRITER_PW, READER_PW) for o in objs if o["kind"] != "Secret")


def admin_password_holders(objs: list[Obj]) -> list[tuple[str, str]]:
    """(namespace, name) of every rendered object whose text holds the admin's password, base64 or not."""
    import base64

    forms = (ADMIN_PW, base64.b64encode(ADMIN_PW.encode()).decode())
    return sorted((o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs
                  if any(form in str(o) for form in forms))


@pytest.mark.parametrize("artifact_store", [{"type": "pvc"}, {"type": "s3", "bucket": "b"}])
def test_the_admin_password_never_reaches_a_serving_namespace(artifact_store: Obj) -> None:
    objs = chart(mlflow={"auth": AUTH, "artifactStore": artifact_store})
    # Only the release namespace's users Secret holds it (the MLflow server and the operator read it there).
    assert admin_password_holders(objs) == [(NAMESPACE, "mlplane-mlflow-auth")]
    users = secret(objs, "mlplane-mlflow-auth", NAMESPACE)["stringData"]
    assert (users["writer-username"], users["writer-password"]) == ("mlplane-writer", WRITER_PW)
    for ns in SERVING_NAMESPACES:  # every Secret there, whatever its name
        held = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["namespace"] == ns]
        assert {o["metadata"]["name"] for o in held} >= {"mlplane-mlflow-reader", "mlplane-mlflow-writer"}
        assert all(o["stringData"].get("username") != "mlplane-admin" for o in held)


def test_the_platform_names_the_secrets() -> None:
    platform = platform_plan.parse(find(chart(), "Platform", "default"))
    credentials = platform.spec.tracking.credentials
    assert credentials is not None and credentials.reader is not None and credentials.writer is not None
    assert (credentials.reader.secret, credentials.reader.username_key, credentials.reader.password_key) == (
        "mlplane-mlflow-reader", "username", "password")
    assert credentials.writer.secret == "mlplane-mlflow-writer"
    assert platform.spec.vector_store.uri == VECTOR_STORE["uri"]  # the `platform:` value stays


@pytest.mark.parametrize("namespace", [NAMESPACE, *SERVING_NAMESPACES])
def test_ray_pods_get_the_reader_and_ingest_jobs_the_writer_from_secrets_that_exist(namespace: str) -> None:
    objs = chart()
    for _, container in ray_pods(objs, namespace):
        assert env_from_secrets(container, objs, namespace) == {USERNAME_ENV: "mlplane-reader", PASSWORD_ENV: READER_PW}
    _, container = ingest_pod(objs, namespace)
    assert env_from_secrets(container, objs, namespace) == {USERNAME_ENV: "mlplane-writer", PASSWORD_ENV: WRITER_PW}


def test_network_policy_admits_ray_and_ingest_pods_to_mlflow() -> None:
    objs = chart()
    policies, mlflow = policies_of(objs), chart_pods(objs)["mlflow"]
    for ns in (NAMESPACE, "team-a"):
        pods = [labels for labels, _ in ray_pods(objs, ns)] + [ingest_pod(objs, ns)[0]]
        assert len(pods) >= 3
        for labels in pods:
            assert allowed(policies, Pod(ns, labels), mlflow, 5000), labels
            assert not allowed(policies, Pod(ns, labels), mlflow, 22)
    limited = objects(render({"mlflow": {"auth": AUTH}, "platform": {"vectorStore": VECTOR_STORE},
                              "networkPolicy": {"modelServerNamespaceSelector": {"mlplane.io/serving": "true"}}}))
    ingest_labels = ingest_pod(limited, "team-a")[0]
    mlflow = chart_pods(limited)["mlflow"]
    assert allowed(policies_of(limited), Pod("team-a", ingest_labels, {"mlplane.io/serving": "true"}), mlflow, 5000)
    assert not allowed(policies_of(limited), Pod("team-a", ingest_labels), mlflow, 5000)


def test_auth_needs_the_readers_and_the_writers_passwords() -> None:
    for artifact_store in ({"type": "pvc"}, {"type": "s3", "bucket": "b"}):
        with pytest.raises(helm_python.HelmError, match=re.escape("set mlflow.auth.readerPassword")):
            render({"mlflow": {"auth": {"enabled": True, "adminPassword": ADMIN_PW, "writerPassword": WRITER_PW},
                               "artifactStore": artifact_store}})
        with pytest.raises(helm_python.HelmError, match=re.escape("set mlflow.auth.writerPassword")):
            render({"mlflow": {"auth": {"enabled": True, "adminPassword": ADMIN_PW, "readerPassword": READER_PW},
                               "artifactStore": artifact_store}})
    for clash in ("mlplane-admin", "mlplane-reader"):
        with pytest.raises(helm_python.HelmError, match=re.escape("mlflow.auth.writerUsername must differ")):
            render({"mlflow": {"auth": {**AUTH, "writerUsername": clash}}})
    with pytest.raises(helm_python.HelmError, match="writerPassword"):  # the schema: 12 characters or more
        render({"mlflow": {"auth": {**AUTH, "writerPassword": "short"}}})
    objs = objects(render({"mlflow": {"auth": AUTH, "artifactStore": {"type": "s3", "bucket": "b"}}}))
    assert secret(objs, "mlplane-mlflow-reader", NAMESPACE)["stringData"]["password"] == READER_PW
    assert not [o for o in objs if o["metadata"]["name"] == "mlplane-mlflow-storage"]  # s3: model servers read S3


def test_existing_secret_the_platform_names_the_secrets_the_user_creates() -> None:
    manifests = render({"mlflow": {"auth": {"enabled": True, "existingSecret": "mlflow-users"}},
                        "serving": {"namespaces": SERVING_NAMESPACES}})
    objs = objects(manifests)
    assert not [o for o in objs if o["kind"] == "Secret"]
    credentials = platform_plan.parse(find(objs, "Platform", "default")).spec.tracking.credentials
    assert credentials is not None and credentials.reader is not None and credentials.writer is not None
    assert (credentials.reader.secret, credentials.writer.secret) == ("mlplane-mlflow-reader", "mlplane-mlflow-writer")
    notes = " ".join(manifests["mlplane/templates/NOTES.txt"].split())
    assert ("Secret mlplane-mlflow-reader, ingestion Jobs write as Secret mlplane-mlflow-writer (each type "
            "kubernetes.io/basic-auth, keys username, password): create both in mlplane, team-a, team-b") in notes


def test_no_credentials_without_auth_or_with_another_mlflow() -> None:
    for values in ({"mlflow": {"auth": {"enabled": False}}},
                   {"mlflow": {"auth": AUTH}, "platform": {"tracking": {"mode": "external",
                                                                        "uri": "http://mlflow.other:5000"}}}):
        platform = platform_plan.parse(find(objects(render(values)), "Platform", "default"))
        assert platform.spec.tracking.credentials is None, values
    own = {"reader": {"secret": "my-reader", "usernameKey": "u", "passwordKey": "p"}}
    objs = objects(render({"mlflow": {"auth": AUTH}, "platform": {"tracking": {"credentials": own}}}))
    credentials = platform_plan.parse(find(objs, "Platform", "default")).spec.tracking.credentials
    assert credentials is not None and credentials.writer is None  # the value's own credentials win
    assert credentials.reader is not None and credentials.reader.secret == "my-reader"
