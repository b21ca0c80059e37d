"""With MLflow behind basic auth, the pods mlplane renders still do their MLflow work, as the chart's users.

The real chart is rendered (Helm) with `mlflow.auth.enabled`; its Platform goes through the cluster rule
(`in_cluster`, the tracking URI the test server's, as the operator's MLFLOW_TRACKING_URI would be) into the
RayService and the ingestion Job. Each container's env is then filled as the kubelet fills it: every
`secretKeyRef` looked up in the chart-rendered Secrets. The containers' own code runs in a subprocess with
exactly that env against a real MLflow with the `mlplane-auth` app (tests/storage/conftest.py):

- the RAG app's Embedder (`mlplane.rag.serve_app`, the Serve config's args) pins `models:/…@champion` and
  downloads it as the reader;
- the ingestion pipeline (`python -m mlplane_pipelines.ingest`, the Job's args) logs its run as the writer
  (the chart's `writerUsername`, never the admin), into a real Milvus Lite server; the same writer, from the
  same env, may not delete what it logged nor manage users (403: the admin's calls).

Without the env MLflow refuses both (401); the reader may not log the ingestion run (403).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ADMIN, HOST, READER, WRITER, Mlflow

from mlplane._generated import REPO_ROOT
from mlplane.auth.mlflow import PASSWORD_ENV, USERNAME_ENV
from mlplane.k8s import ResolvedArtifact, render
from mlplane.k8s.ingest import render_ingest
from mlplane.k8s.resolve import in_cluster
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import milvus_lite_process
from mlplane.runtime.local.process import free_port, spawn, stop_tree
from mlplane.spec import ModelDeployment, Platform
from mlplane_operator import platform_plan

sys.path.insert(0, str(REPO_ROOT / "tests" / "k8s"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "charts"))
from chart_helpers import find, objects
from chart_helpers import render as render_chart

Obj = dict
NAMESPACE = "team-a"  # a serving namespace: the pods run there, and so do their Secrets
EMBEDDER = "models:/mlplane-embedder@champion"
# The container code the Serve config runs: the application's Embedder deployment, built from its args.
EMBEDDER_CODE = """
import json, sys
from mlplane.rag.serve_app import Embedder
from mlplane.rag.serve_config import RagAppArgs
cfg = RagAppArgs.model_validate(json.loads(sys.argv[1]))
embedder = Embedder.func_or_class(cfg.embedder.model_dump(), cfg.tracking_uri)
print(json.dumps({**embedder.meta, "dim": int(embedder.embedder.embed(["hello"]).shape[1])}))
"""


def chart_objects(milvus_uri: str) -> list[Obj]:
    values = {"mlflow": {"auth": {"enabled": True, "adminUsername": ADMIN[0], "adminPassword": ADMIN[1],
                                  "writerUsername": WRITER[0], "writerPassword": WRITER[1],
                                  "readerUsername": READER[0], "readerPassword": READER[1]}},
              "serving": {"namespaces": [NAMESPACE]},
              "platform": {"vectorStore": {"enabled": True, "backend": "milvus", "uri": milvus_uri,
                                           "collections": [{"name": "docs", "source": "/corpus"}]}}}
    return objects(render_chart(values))


def cluster_platform(objs: list[Obj], tracking_uri: str) -> Platform:
    """The chart's Platform as the operator renders with it, in the serving namespace."""
    platform = in_cluster(platform_plan.parse(find(objs, "Platform", "default")), tracking_uri)
    return platform.model_copy(update={"metadata": platform.metadata.model_copy(update={"namespace": NAMESPACE})})


def kubelet_env(container: Obj, objs: list[Obj]) -> dict[str, str]:
    """The container's env as the kubelet fills it in NAMESPACE: plain values, and secretKeyRefs from the
    chart's Secrets there (a missing Secret or key fails, as the pod would not start)."""
    secrets = {o["metadata"]["name"]: o for o in objs
               if o["kind"] == "Secret" and o["metadata"]["namespace"] == NAMESPACE}
    out = {}
    for entry in container.get("env", []):
        if "value" in entry:
            out[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return out


def run_container_code(argv: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    """`argv` with the pod's env only: no MLflow settings of this process (the admin's credentials, a tracking URI)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(argv, env={**base, **env, "HOME": str(home)}, capture_output=True, text=True,
                          timeout=600, check=False)


def refused_as(done: subprocess.CompletedProcess, status: str, code: str) -> bool:
    """Whether MLflow's refusal (the mlplane-auth app's status or error code) is what the process died of."""
    return status in done.stderr or code in done.stderr


def without_mlflow_users(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in (USERNAME_ENV, PASSWORD_ENV)}


def test_the_rag_app_downloads_its_model_as_the_reader(auth_mlflow: Mlflow, tmp_path: Path) -> None:
    from mlplane.rag.embedding import register_embedder

    version = register_embedder(auth_mlflow.url)  # as the admin (the training side), like iris in conftest
    objs = chart_objects("http://milvus.milvus.svc:19530")
    platform = cluster_platform(objs, auth_mlflow.url)
    deployment = ModelDeployment.model_validate({"metadata": {"name": "rag", "namespace": NAMESPACE}, "spec": {
        "model": "models:/iris@champion", "runtime": "ray", "retrieval": {"collection": "docs"},
        "rag": {"embedder": {"model": EMBEDDER}, "generator": {"type": "extractive"}}}})
    (ray,) = render(deployment, platform, ResolvedArtifact("1", "mlflow-artifacts:/1/a/artifacts/model"))
    (app,) = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["tracking_uri"] == auth_mlflow.url and app["args"]["embedder"]["model_uri"] == EMBEDDER
    groups = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (workers,) = [g for g in groups if g["groupName"] == "workers"]  # where the Embedder runs
    (container,) = workers["template"]["spec"]["containers"]
    env = kubelet_env(container, objs)
    assert (env[USERNAME_ENV], env[PASSWORD_ENV]) == READER

    argv = [sys.executable, "-c", EMBEDDER_CODE, json.dumps(app["args"])]
    done = run_container_code(argv, env, tmp_path / "reader")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(done.stdout.strip().splitlines()[-1])
    assert (meta["model"], meta["version"], meta["dim"]) == (EMBEDDER, version, 384)

    refused = run_container_code(argv, without_mlflow_users(env), tmp_path / "anonymous")
    assert refused.returncode != 0 and refused_as(refused, "401", "UNAUTHENTICATED"), refused.stderr[-3000:]


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def milvus(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Milvus Lite server on loopback, as the local runtime starts it (the cluster's Milvus stands in)."""
    paths = StatePaths(tmp_path / "state")
    paths.milvus_dir.mkdir(parents=True)
    port = free_port(HOST)
    spec = milvus_lite_process(paths, HOST, port)
    proc = spawn(spec)
    try:
        deadline = time.monotonic() + 300
        while not accepts_connections(port):
            assert proc.poll() is None and time.monotonic() < deadline, "Milvus Lite did not start"
            time.sleep(0.25)
        yield f"http://{HOST}:{port}"
    finally:
        stop_tree(proc.pid)


def test_the_ingest_job_logs_its_run_as_the_writer(auth_mlflow: Mlflow, milvus: str, tmp_path: Path) -> None:
    from mlplane_pipelines.ingest import last_ingest_params

    corpus = tmp_path / "corpus"  # what the Job mounts at `source`
    corpus.mkdir()
    (corpus / "guide.md").write_text("# Serving\n\nmlplane serves models with KServe, Triton and Ray.\n")
    objs = chart_objects(milvus)
    (job,) = render_ingest(cluster_platform(objs, auth_mlflow.url), "docs")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = list(container["args"])
    assert args[args.index("--tracking-uri") + 1] == auth_mlflow.url
    args[args.index("--source") + 1] = str(corpus)
    env = kubelet_env(container, objs)
    assert (env[USERNAME_ENV], env[PASSWORD_ENV]) == WRITER  # the chart's writer, not the admin
    argv = [sys.executable, "-m", "mlplane_pipelines.ingest", *args]

    refused = run_container_code(argv, without_mlflow_users(env), tmp_path / "anonymous")
    assert refused.returncode != 0 and refused_as(refused, "401", "UNAUTHENTICATED"), refused.stderr[-3000:]
    as_reader = {**env, USERNAME_ENV: READER[0], PASSWORD_ENV: READER[1]}
    refused = run_container_code(argv, as_reader, tmp_path / "reader")
    assert refused.returncode != 0 and refused_as(refused, "403", "PERMISSION_DENIED"), refused.stderr[-3000:]
    assert last_ingest_params(auth_mlflow.url, "docs") == {}  # nothing logged so far (read as the admin)

    done = run_container_code(argv, env, tmp_path / "writer")
    assert done.returncode == 0, done.stderr[-3000:]
    params = last_ingest_params(auth_mlflow.url, "docs")
    assert params["collection"] == "docs" and params["source"] == str(corpus)

    # The same pod env may not undo or administer anything: deleting the run, adding a user (the admin's).
    denied = run_container_code([sys.executable, "-c", ADMIN_CALLS_CODE, auth_mlflow.url], env, tmp_path / "deny")
    assert denied.returncode == 0, denied.stderr[-3000:]
    assert json.loads(denied.stdout.strip().splitlines()[-1]) == {"runs/delete": 403, "users/create": 403}
    assert last_ingest_params(auth_mlflow.url, "docs")["collection"] == "docs"  # the run is still there


# Admin-only calls, made with the pod's MLflow env (MLFLOW_TRACKING_USERNAME/PASSWORD), as MLflow's client sends.
ADMIN_CALLS_CODE = """
import json, os, sys
import requests
from mlflow.tracking import MlflowClient
url = sys.argv[1]
auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
client = MlflowClient(tracking_uri=url)
exp = client.get_experiment_by_name("mlplane-ingest")
(run,) = client.search_runs([exp.experiment_id], max_results=1)
out = {}
for path, body in (("runs/delete", {"run_id": run.info.run_id}),
                   ("users/create", {"username": "eve", "password": "eve-Pa55word-9"})):
    out[path] = requests.post(f"{url}/api/2.0/mlflow/{path}", json=body, auth=auth, timeout=30).status_code
print(json.dumps(out))
"""

