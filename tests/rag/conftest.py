"""One real local platform for tests/rag: `mlplane up` with MLflow and the Milvus Lite server component.

Shared by every module here (start-up and model loading dominate the run time); each test uses its
own collection. The embedder (packaged all-MiniLM-L6-v2 weights) is loaded once per session.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "rag" / "corpus"
QA = ROOT / "examples" / "rag" / "eval" / "qa.yaml"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane, status  # noqa: E402

PLATFORM_YAML = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: rag-tests}
spec:
  vectorStore:
    enabled: true
    collections:
      - name: declared
        source: %s
        chunkSize: 384
        chunkOverlap: 48
"""


@pytest.fixture(scope="session")
def rag_platform(tmp_path_factory):
    """``{"dir", "platform_file", "tracking", "milvus"}`` of a running platform with a vector store."""
    base = tmp_path_factory.mktemp("rag-platform")
    platform_file = base / "platform.yaml"
    platform_file.write_text(PLATFORM_YAML % CORPUS)
    state_dir = base / ".mlplane"
    mlplane(state_dir, "up", "-f", str(platform_file))
    try:
        state = status(state_dir)
        yield {"dir": state_dir, "platform_file": platform_file, "tracking": state["trackingUri"],
               "milvus": state["components"]["milvus"]["url"]}
    finally:
        mlplane(state_dir, "down", check=False)


@pytest.fixture(scope="session")
def embedder():
    from mlplane.rag.embedding import Embedder

    return Embedder()


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    """A private, editable copy of the shipped corpus."""
    return Path(shutil.copytree(CORPUS, tmp_path / "corpus"))
