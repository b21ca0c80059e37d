"""Render a collection's ingestion pipeline as a Kubernetes `Job` and, with a schedule, a `CronJob`. Pure.

The pod runs ``python -m mlplane_pipelines.ingest`` (the same pipeline as ``mlplane ingest``) against
the platform's Milvus (``spec.vectorStore.uri``) and MLflow (as ``spec.tracking.credentials.writer``
when MLflow asks for a user), with the collection's documents mounted read-only from its
PersistentVolumeClaim. Pods run under the restricted Pod Security Standard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlplane import images
from mlplane.k8s.mlflow_credentials import mlflow_env
from mlplane.k8s.render import vector_store_env
from mlplane.spec.platform import Platform, VectorCollectionSpec

Obj = dict[str, Any]

DEFAULT_INGEST_IMAGE = images.INGEST  # images/mlplane-ingest.Containerfile
DEFAULT_NAMESPACE = "mlplane"  # where `mlplane cluster install` puts MLflow
MLFLOW_PORT = 5000
# The embedder's weights ship in the image; nothing is downloaded at run time.
_OFFLINE_ENV = [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
                {"name": "HOME", "value": "/tmp"}]


class IngestRenderError(ValueError):
    """A platform or collection that cannot be rendered for the cluster; the message names the field."""


@dataclass(frozen=True)
class IngestOptions:
    image: str = DEFAULT_INGEST_IMAGE
    backoff_limit: int = 2
    ttl_seconds_after_finished: int = 86400


def job_name(collection: str) -> str:
    """``mlplane-ingest-<collection>`` as a DNS-1123 label (at most 63 characters)."""
    return f"mlplane-ingest-{collection.lower().replace('_', '-')}"[:63].rstrip("-")


def _tracking_uri(platform: Platform) -> str:
    tracking = platform.spec.tracking
    if tracking.mode == "external" and tracking.uri:
        return tracking.uri
    return f"http://mlplane-mlflow.{DEFAULT_NAMESPACE}.svc:{MLFLOW_PORT}"  # the release namespace


def _labels(collection: VectorCollectionSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mlplane-ingest", "app.kubernetes.io/component": "ingest",
            "app.kubernetes.io/managed-by": "mlplane", "mlplane.io/collection": job_name(collection.name)[15:]}


def _pod_template(platform: Platform, collection: VectorCollectionSpec, namespace: str, opts: IngestOptions) -> Obj:
    store = platform.spec.vector_store
    args = [
        "--source", collection.source,
        "--collection", collection.name,
        "--vector-store-uri", str(store.uri),
        "--tracking-uri", _tracking_uri(platform),
        "--chunk-size", str(collection.chunk_size),
        "--chunk-overlap", str(collection.chunk_overlap),
        "--index", json.dumps(store.index.model_dump(mode="json", by_alias=True), separators=(",", ":")),
    ]
    if store.embedding_model:
        args += ["--embedding-model", store.embedding_model]
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    if collection.volume_claim:
        mounts.append({"name": "corpus", "mountPath": collection.source, "readOnly": True})
        volumes.append({"name": "corpus", "persistentVolumeClaim": {"claimName": collection.volume_claim,
                                                                    "readOnly": True}})
    container = {
        "name": "ingest",
        "image": opts.image,
        "command": ["python", "-m", "mlplane_pipelines.ingest"],
        "args": args,
        # The Milvus token and the MLflow writer (the pipeline logs a run) only as secretKeyRefs.
        "env": [*_OFFLINE_ENV, *vector_store_env(platform), *mlflow_env(platform, "writer")],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "metadata": {"labels": _labels(collection)},
        "spec": {
            "restartPolicy": "Never",
            # The Platform's model-server account: its cloud identity reads the corpus bucket (IRSA).
            "serviceAccountName": platform.spec.serving.service_account_name,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": volumes,
        },
    }


def _job_spec(platform: Platform, collection: VectorCollectionSpec, namespace: str, opts: IngestOptions) -> Obj:
    return {
        "backoffLimit": opts.backoff_limit,
        "ttlSecondsAfterFinished": opts.ttl_seconds_after_finished,
        "template": _pod_template(platform, collection, namespace, opts),
    }


def render_ingest(platform: Platform, collection: str, opts: IngestOptions | None = None) -> list[Obj]:
    """A `Job` that ingests ``collection`` now, and a `CronJob` when the collection has a schedule."""
    opts = opts or IngestOptions()
    store = platform.spec.vector_store
    spec = store.collection(collection)
    if spec is None:
        known = ", ".join(c.name for c in store.collections) or "none"
        raise IngestRenderError(f"spec.vectorStore.collections: no collection named '{collection}' "
                                f"(declared: {known})")
    if store.backend != "milvus" or not store.uri:
        raise IngestRenderError("spec.vectorStore: the cluster needs backend 'milvus' with its uri "
                                "(e.g. 'http://milvus.mlplane.svc:19530'); milvus-lite is local only")
    if not spec.source.startswith("/"):
        raise IngestRenderError(f"spec.vectorStore.collections[{collection}].source: got '{spec.source}'; "
                                "the cluster needs an absolute path in the ingest pod")
    namespace = platform.metadata.namespace or DEFAULT_NAMESPACE
    name = job_name(spec.name)
    meta = {"name": name, "namespace": namespace, "labels": _labels(spec)}
    objects: list[Obj] = [{"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                           "spec": _job_spec(platform, spec, namespace, opts)}]
    if spec.schedule:
        # A CronJob name leaves 11 characters for the suffix of the Jobs it creates.
        cron_meta = {**meta, "name": name[:52].rstrip("-")}
        objects.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": cron_meta,
                        "spec": {"schedule": spec.schedule, "concurrencyPolicy": "Forbid",
                                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                                 "jobTemplate": {"metadata": {"labels": _labels(spec)},
                                                 "spec": _job_spec(platform, spec, namespace, opts)}}})
    return objects
