"""The ingestion pipeline as a Kubernetes Job and CronJob: valid objects, restricted pods, clear errors."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml
from platform_helpers import mlplane

from mlplane.k8s.ingest import IngestRenderError, render_ingest
from mlplane.spec import Platform

K8S_VERSION = "1.32"


def _platform(**collection) -> Platform:
    return Platform.model_validate({"metadata": {"name": "prod", "namespace": "ml"}, "spec": {"vectorStore": {
        "enabled": True, "backend": "milvus", "uri": "http://milvus.milvus.svc:19530",
        "embeddingModel": "models:/mlplane-embedder@champion",
        "index": {"ef": 64},
        "collections": [{"name": "mlplane_docs", "source": "/corpus", "volumeClaim": "docs", "chunkSize": 256,
                         "chunkOverlap": 32, **collection}]}}})


def test_job_and_cronjob_are_valid_and_restricted():
    job, cron = render_ingest(_platform(schedule="0 3 * * *"), "mlplane_docs")
    for obj in (job, cron):
        assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == K8S_VERSION
        assert obj["metadata"]["namespace"] == "ml"
    assert (job["kind"], cron["kind"]) == ("Job", "CronJob")
    assert cron["spec"]["schedule"] == "0 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["template"] == job["spec"]["template"]

    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True and pod["automountServiceAccountToken"] is False

    args = container["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert container["command"] == ["python", "-m", "mlplane_pipelines.ingest"]
    assert flags["--collection"] == "mlplane_docs" and flags["--source"] == "/corpus"
    assert flags["--vector-store-uri"] == "http://milvus.milvus.svc:19530"
    assert flags["--chunk-size"] == "256" and flags["--chunk-overlap"] == "32"
    assert flags["--embedding-model"] == "models:/mlplane-embedder@champion"
    assert json.loads(flags["--index"])["ef"] == 64
    assert flags["--tracking-uri"] == "http://mlplane-mlflow.mlplane.svc:5000"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "corpus")
    assert mount == {"name": "corpus", "mountPath": "/corpus", "readOnly": True}
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_without_schedule_only_a_job():
    (job,) = render_ingest(_platform(), "mlplane_docs")
    assert job["kind"] == "Job" and job["metadata"]["name"] == "mlplane-ingest-mlplane-docs"


def test_the_pipeline_module_accepts_the_rendered_args():
    from mlplane_pipelines.ingest import main

    (job,) = render_ingest(_platform(source="/nonexistent-corpus", volumeClaim=None), "mlplane_docs")
    assert main(job["spec"]["template"]["spec"]["containers"][0]["args"]) == 2  # parsed; the path is missing


def test_render_errors_name_the_field():
    with pytest.raises(IngestRenderError, match="no collection named 'other' \\(declared: mlplane_docs\\)"):
        render_ingest(_platform(), "other")
    with pytest.raises(IngestRenderError, match="source: got 'corpus'"):
        render_ingest(_platform(source="corpus"), "mlplane_docs")
    local = Platform.model_validate({"metadata": {"name": "dev"}, "spec": {"vectorStore": {
        "enabled": True, "collections": [{"name": "d", "source": "/c"}]}}})
    with pytest.raises(IngestRenderError, match="milvus-lite is local only"):
        render_ingest(local, "d")


def test_cli_renders_the_ingest_job(tmp_path):
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump(_platform(schedule="@daily").to_dict()))
    proc = mlplane(tmp_path / ".mlplane", "render", "--ingest", "mlplane_docs", "--platform", str(platform))
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout)]
    assert kinds == ["Job", "CronJob"]
    bad = mlplane(tmp_path / ".mlplane", "render", "--ingest", "nope", "--platform", str(platform), check=False)
    assert bad.returncode == 2 and "no collection named 'nope'" in bad.stderr


def test_vector_store_spec_errors_name_the_field(tmp_path):
    bad = tmp_path / "platform.yaml"
    cases = [
        ({"backend": "milvus"}, "spec.vectorStore: backend 'milvus' needs `uri`"),
        ({"collections": [{"name": "my-docs", "source": "/c"}]}, "spec.vectorStore.collections[0].name: got 'my-docs'"),
        ({"collections": [{"name": "d", "source": "/c", "schedule": "daily"}]}, "must be a cron schedule"),
        ({"collections": [{"name": "d", "source": "/c", "chunkSize": 64, "chunkOverlap": 64}]},
         "chunkOverlap (64) must be less than chunkSize (64)"),
        ({"collections": [{"name": "d", "source": "/a"}, {"name": "d", "source": "/b"}]}, "duplicate names ['d']"),
        ({"index": {"type": "DISKANN"}}, "spec.vectorStore.index.type: got 'DISKANN'"),
    ]
    for vector_store, message in cases:
        doc = {"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "metadata": {"name": "p"},
               "spec": {"vectorStore": {"enabled": True, **vector_store}}}
        bad.write_text(yaml.safe_dump(doc))
        proc = mlplane(tmp_path / ".mlplane", "validate", "-f", str(bad), check=False)
        assert proc.returncode == 2, (vector_store, proc.stdout)
        assert message in " ".join(proc.stderr.split()), (vector_store, proc.stderr)


def test_local_plan_runs_milvus_lite_on_loopback_under_the_state_dir(tmp_path):
    from mlplane.runtime.local.paths import StatePaths
    from mlplane.runtime.local.plan import RESERVED_NAMES, milvus_lite_process

    paths = StatePaths(tmp_path / ".mlplane")
    spec = milvus_lite_process(paths, "127.0.0.1", 19531)
    assert spec.argv[1:4] == ("-m", "milvus_lite", "server")
    args = dict(zip(spec.argv[4::2], spec.argv[5::2], strict=True))
    assert args == {"--data-dir": str(paths.root / "milvus" / "data"), "--host": "127.0.0.1", "--port": "19531"}
    assert spec.ready_url == "tcp://127.0.0.1:19531" and spec.name == "milvus" and "milvus" in RESERVED_NAMES


def test_index_settings_become_milvus_params():
    from mlplane.spec.platform import VectorIndexSpec

    hnsw = VectorIndexSpec()
    assert (hnsw.type, hnsw.metric, hnsw.build_params()) == ("HNSW", "COSINE", {"M": 16, "efConstruction": 200})
    assert hnsw.search_params(5) == {"ef": 128} and hnsw.search_params(300) == {"ef": 300}
    ivf = VectorIndexSpec(type="IVF_FLAT", nlist=64, nprobe=100)
    assert ivf.build_params() == {"nlist": 64} and ivf.search_params(5) == {"nprobe": 64}
    assert VectorIndexSpec(type="FLAT").search_params(5) == {}


def test_the_milvus_token_reaches_the_job_only_from_its_secret():
    platform = _platform()
    platform.spec.vector_store.token_secret = {"name": "milvus-auth", "key": "token"}
    platform = Platform.model_validate(platform.model_dump(by_alias=True))
    (job,) = render_ingest(platform, "mlplane_docs")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    token = [e for e in container["env"] if e["name"] == "MLPLANE_VECTOR_STORE_TOKEN"]
    assert token == [{"name": "MLPLANE_VECTOR_STORE_TOKEN",
                      "valueFrom": {"secretKeyRef": {"name": "milvus-auth", "key": "token"}}}]
    assert "milvus-auth" not in " ".join(container["args"])

