"""Triton model repositories for `runtime: triton` in the cluster, stored next to the model version.

KServe's Triton runtime downloads `storageUri` into `/mnt/models` and runs `tritonserver
--model-store=/mnt/models`, so `storageUri` must be a model repository, not the MLflow model. The
operator generates one (config.pbtxt + the Python-backend shim, from `mlplane.runtime.triton_repo`)
and logs it as artifacts of the model version's run, under::

    triton-repository/<version>/<digest>/<deployment>/config.pbtxt
                                        /<deployment>/<version>/model.py
                                        /<deployment>/<version>/model.json   (the model's artifact URI)

`<digest>` hashes the files, so a spec change (batching, instances, GPUs) gets its own directory
and an existing one is never rewritten: writing is skipped when the directory is there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mlplane.runtime.triton_repo import repository_files, version_dir
from mlplane.serving.signature import TensorMeta
from mlplane.spec import ModelDeployment

ROOT = "triton-repository"


@dataclass(frozen=True)
class TritonRepository:
    """Which files make the repository and where under the run's artifacts they go."""

    artifact_path: str
    files: dict[str, str]  # relative path -> text


def repository(deployment: ModelDeployment, version: str, model_uri: str, inputs: Sequence[TensorMeta],
               outputs: Sequence[TensorMeta]) -> TritonRepository:
    """The repository serving registry `version` (stored at `model_uri`) as the deployment's name.

    Raises `TritonRepoError` for signatures Triton cannot express.
    """
    files = repository_files(deployment.metadata.name, version, model_uri, inputs, outputs, deployment.spec)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return TritonRepository(f"{ROOT}/{version_dir(version)}/{digest.hexdigest()[:16]}", files)
