"""Triton model repositories for `runtime: triton` in the cluster, stored next to the model version.

KServe's Triton runtime downloads `storageUri` into `/mnt/models` and runs `tritonserver
--model-store=/mnt/models`, so `storageUri` must be a model repository, not the MLflow model. The
operator generates one (`mlplane.triton.repository.cluster_repository`: config.pbtxt, the
Python-backend shim and the MLflow model's files) and logs it, packed, with the model version's run
(see `mlplane.k8s.resolve`)::

    triton-repository/<version>/<digest>/repository.tar.gz
        <deployment>/config.pbtxt
        <deployment>/<version>/model.py
        <deployment>/<version>/model.json   ({"model_uri": "model"}: the directory next to it)
        <deployment>/<version>/model/...    (the MLflow model: MLmodel, model files)

`<digest>` hashes the generated files, so a spec change gets its own directory and an existing one is
never rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlplane.core.signature import TensorMeta
from mlplane.spec import ModelDeployment
from mlplane.triton.repository import CLUSTER_MODEL_DIR, TritonRepository, cluster_repository

__all__ = ["TritonRepository", "repository"]


def repository(deployment: ModelDeployment, version: str, model_uri: str, inputs: Sequence[TensorMeta],
               outputs: Sequence[TensorMeta]) -> TritonRepository:
    """The repository serving registry `version` as the deployment's name (`model_uri` goes into model.json;
    the cluster passes the relative `model` directory). Raises `TritonRepoError` for unservable signatures."""
    return cluster_repository(deployment.metadata.name, version, inputs, outputs, deployment.spec,
                              model_uri or CLUSTER_MODEL_DIR)
