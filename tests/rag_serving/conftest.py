"""A real local platform with a `runtime: ray` RAG deployment: MLflow, Milvus Lite, Ray Serve, real models.

Ray binds more than loopback: run these tests in a private network namespace (`make test` does), e.g.
``unshare -n sh -c 'ip link set lo up && .venv/bin/python -m pytest tests/rag_serving -q'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane, status  # noqa: E402
from rag_helpers import fill_collection  # noqa: E402

from mlplane.auth.mlflow import use_platform_credentials  # noqa: E402


@pytest.fixture(scope="module")
def rag(tmp_path_factory):
    """`mlplane up`, both models registered, the corpus indexed, the RAG deployment in rag.yaml deployed."""
    from mlplane.rag.embedding import register_embedder
    from mlplane.rag.generate import register_generator

    base = tmp_path_factory.mktemp("rag")
    state_dir = base / ".mlplane"
    mlplane(state_dir, "up", "-f", str(Path(__file__).with_name("platform.yaml")))
    use_platform_credentials(state_dir)  # auth on: MLflow needs the platform's user, as `eval "$(mlplane env)"` gives
    try:
        state = status(state_dir)
        tracking, milvus = state["trackingUri"], state["components"]["milvus"]["url"]
        embedder_version = register_embedder(tracking)
        generator_version = register_generator(tracking)
        fill_collection(milvus)
        key = mlplane(state_dir, "keys", "create", "tests").stdout.strip()
        mlplane(state_dir, "deploy", "-f", str(Path(__file__).with_name("rag.yaml")), timeout=540)
        dep = status(state_dir)["deployments"]["rag"]
        yield {"dir": state_dir, "url": dep["url"], "tracking": tracking, "milvus": milvus, "key": key,
               "headers": {"Authorization": f"Bearer {key}"},
               "embedder_version": embedder_version, "generator_version": generator_version}
    finally:
        mlplane(state_dir, "down", check=False)
