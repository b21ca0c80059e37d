"""The vector store client against the platform's Milvus Lite server: URIs, search results, unknown collections."""

from __future__ import annotations

import pytest
from conftest import CORPUS, QA
from platform_helpers import mlplane

from mlplane.rag.ingest import IngestSettings, ingest
from mlplane.rag.loaders import load_corpus
from mlplane.rag.store import UnknownCollection, VectorStore, VectorStoreError
from mlplane.runtime.local.control import vector_store_uri
from mlplane.spec import Platform


def test_status_shows_the_vector_store_and_clients_find_it(rag_platform, tmp_path):
    text = mlplane(rag_platform["dir"], "status").stdout
    assert "milvus" in text and rag_platform["milvus"] in text
    assert rag_platform["milvus"].startswith("http://127.0.0.1:")
    assert vector_store_uri(rag_platform["dir"]) == rag_platform["milvus"]

    with pytest.raises(VectorStoreError, match="no vector store is running on"):
        vector_store_uri(tmp_path)
    cluster = Platform.model_validate({"metadata": {"name": "prod"}, "spec": {"vectorStore": {
        "enabled": True, "backend": "milvus", "uri": "http://milvus.mlplane.svc:19530"}}})
    assert vector_store_uri(tmp_path, cluster) == "http://milvus.mlplane.svc:19530"


def test_search_returns_ranked_hits_with_text_source_and_title(rag_platform, embedder):
    store = VectorStore(rag_platform["milvus"])
    ingest(store, embedder, "hits", load_corpus(CORPUS), IngestSettings(512, 64, embedder.source))
    assert "hits" in store.collections()
    questions = ["Which HTTP status does a key over its rate limit get?", "Where is the Triton model repository?"]
    first, second = store.search("hits", embedder.embed(questions), top_k=4)
    assert len(first) == len(second) == 4
    assert first[0].source == "api-keys.md" and first[0].title == "API keys and rate limits" and "429" in first[0].text
    assert second[0].source == "triton.html" and second[0].title == "The Triton runtime"
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    assert 0 < first[0].score <= 1.0 + 1e-6  # cosine similarity of unit vectors


def test_unknown_collection_is_named_with_the_existing_ones(rag_platform, embedder):
    store = VectorStore(rag_platform["milvus"])
    store.ensure_collection("known_one", embedder.dim)
    with pytest.raises(UnknownCollection) as caught:
        store.search("no_such_docs", embedder.embed(["anything"]), 3)
    message = str(caught.value)
    assert "'no_such_docs' does not exist" in message and "known_one" in message
    assert "mlplane ingest PATH --collection no_such_docs" in message

    proc = mlplane(rag_platform["dir"], "eval", "--collection", "no_such_docs", "--qa", str(QA), check=False)
    assert proc.returncode == 2
    assert "'no_such_docs' does not exist" in " ".join(proc.stderr.split()) and "known_one" in proc.stderr
