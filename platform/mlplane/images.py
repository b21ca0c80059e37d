"""The container images mlplane publishes: one place for their names and tags.

Every image is built from `images/<name>.Containerfile` (`make images`) and published for a release
by `.github/workflows/images.yml` as `ghcr.io/mlplane/<name>:<version>`, where the version is the
package's (`mlplane.__version__`, the mlplane chart's appVersion). The chart's values, the renderer
(`mlplane.k8s.render`: RayServices) and the ingestion Jobs (`mlplane.k8s.ingest`) all take their
image references from here; a test holds the chart's `values.yaml` equal to them.
"""

from __future__ import annotations

import re

from mlplane._version import __version__

REGISTRY = "ghcr.io/mlplane"
TAG = __version__
GPU_SUFFIX = "-gpu"

# A reference with a tag or a digest on its last path segment: `repo[:port]/path/name:tag` or `...@sha256:...`.
# The registry's port colon sits before a `/`, so it never counts as a tag.
_NAME = r"(?:[^\s/]+/)*[^\s/:@]+"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
TAGGED_REFERENCE = rf"^{_NAME}(?::{_TAG}(?:@{_DIGEST})?|@{_DIGEST})$"
REPOSITORY = rf"^{_NAME}$"
TAG_PATTERN = rf"^(?:{_TAG})?$"


def reference(name: str, tag: str = TAG) -> str:
    """`ghcr.io/mlplane/<name>:<tag>`."""
    return f"{REGISTRY}/{name}:{tag}"


def gpu_variant(image: str) -> str:
    """The CUDA build of an image: the same repository, tag + `-gpu` (`mlplane-ray:0.1.0-gpu`)."""
    return f"{image}{GPU_SUFFIX}"


def is_tagged(image: str) -> bool:
    """Whether `image` names a tag or a digest (never an implicit `:latest`)."""
    return re.match(TAGGED_REFERENCE, image) is not None


OPERATOR_REPOSITORY = f"{REGISTRY}/mlplane-operator"
MLFLOW_REPOSITORY = f"{REGISTRY}/mlplane-mlflow"

#: The operator (kopf): `python -m mlplane_operator`.
OPERATOR = reference("mlplane-operator")
#: KServe's Python ModelServer for MLflow models (`python -m mlplane.serving`), ClusterServingRuntime `mlplane-mlflow`.
SERVING = reference("mlplane-serving")
#: The ingestion Job (`python -m mlplane_pipelines.ingest`), with the embedder on CPU torch.
INGEST = reference("mlplane-ingest")
#: Ray Serve applications (`mlplane.rag.serve_app:build_app`) on rayproject/ray; workers with GPUs take RAY_GPU.
RAY = reference("mlplane-ray")
RAY_GPU = gpu_variant(RAY)
#: NVIDIA Triton with mlplane's Python backend (`mlplane.serving.triton_backend`): ClusterServingRuntime
#: `mlplane-triton`.
TRITON = reference("mlplane-triton")
#: The MLflow tracking server with its PostgreSQL, S3 and GCS clients.
MLFLOW = reference("mlplane-mlflow")

#: Every image `make images` builds, by name (the Containerfile is `images/<name>.Containerfile`).
ALL: dict[str, str] = {
    "mlplane-operator": OPERATOR,
    "mlplane-serving": SERVING,
    "mlplane-ingest": INGEST,
    "mlplane-ray": RAY,
    "mlplane-triton": TRITON,
    "mlplane-mlflow": MLFLOW,
}


if __name__ == "__main__":  # `python -m mlplane.images`: the references, one a line (make images, the workflow)
    for _name, _ref in ALL.items():
        print(_name, _ref)
