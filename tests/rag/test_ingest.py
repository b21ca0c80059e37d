"""`mlplane ingest` against a real platform: idempotent upserts, changed and deleted documents, MLflow runs."""

from __future__ import annotations

import json
import os
import signal

from conftest import CORPUS
from mlflow import MlflowClient
from platform_helpers import mlplane, status, wait_for

from mlplane.rag.ingest import IngestSettings, ingest
from mlplane.rag.loaders import load_corpus
from mlplane.rag.store import VectorStore


def _ingest_json(platform, *args: str) -> dict:
    proc = mlplane(platform["dir"], "ingest", *args, "-o", "json", timeout=600)
    return json.loads(proc.stdout)


def test_cli_ingests_a_declared_collection_once_and_logs_each_run(rag_platform):
    # No PATH and no --platform: source and chunk settings come from the running platform's spec.
    first = _ingest_json(rag_platform, "--collection", "declared")
    docs = len(load_corpus(CORPUS))
    assert first["documents_new"] == docs == first["documents"]
    assert first["chunks_added"] == first["chunks_total"] > docs

    second = _ingest_json(rag_platform, "--collection", "declared")
    assert (second["chunks_added"], second["chunks_updated"], second["chunks_deleted"]) == (0, 0, 0)
    assert second["chunks_unchanged"] == second["chunks_total"] == first["chunks_total"]

    client = MlflowClient(rag_platform["tracking"])
    exp = client.get_experiment_by_name("mlplane-ingest")
    runs = client.search_runs([exp.experiment_id], "tags.`mlplane.collection` = 'declared'")
    assert {r.info.run_id for r in runs} == {first["runId"], second["runId"]}
    for run in runs:
        assert run.data.params["chunk_size"] == "384" and run.data.params["chunk_overlap"] == "48"
        assert "all-MiniLM-L6-v2" in run.data.params["embedder"]
        assert run.data.metrics["documents"] == docs
    added = {r.info.run_id: r.data.metrics["chunks_added"] for r in runs}
    assert added == {first["runId"]: first["chunks_total"], second["runId"]: 0}


def test_cli_table_summarises_the_run(rag_platform):
    out = mlplane(rag_platform["dir"], "ingest", str(CORPUS / "promotion.md"), "--collection", "single",
                  timeout=600).stdout
    assert "Ingested" in out and "'single'" in out and "documents" in out and "chunks" in out
    assert "experiment mlplane-ingest" in out


def test_changed_document_replaces_its_chunks_and_deleted_one_disappears(rag_platform, embedder, corpus_copy):
    store = VectorStore(rag_platform["milvus"])
    settings = IngestSettings(chunk_size=512, chunk_overlap=64, embedder=embedder.source)
    first = ingest(store, embedder, "edits", load_corpus(corpus_copy), settings)
    before = store.documents("edits")

    promotion = corpus_copy / "promotion.md"
    promotion.write_text(promotion.read_text() + "\n## Canary\n\nA canary sends a share of traffic to the new "
                         "version first; mlplane does not do canaries yet.\n")
    (corpus_copy / "api-keys.md").unlink()
    second = ingest(store, embedder, "edits", load_corpus(corpus_copy), settings)

    assert (second.documents_new, second.documents_changed, second.documents_deleted) == (0, 1, 1)
    assert second.documents_unchanged == first.documents - 2
    after = store.documents("edits")
    assert "api-keys.md" not in after
    old_ids, new_ids = before["promotion.md"][1], after["promotion.md"][1]
    assert new_ids != old_ids and old_ids & new_ids, "only the chunks touched by the edit change"
    assert second.chunks_updated == len(new_ids - old_ids)
    assert second.chunks_deleted == len(old_ids - new_ids) + len(before["api-keys.md"][1])
    assert len(after["promotion.md"][0]) == 1, "every chunk of a document carries its new fingerprint"
    assert store.count("edits") == first.chunks_total + second.chunks_updated - second.chunks_deleted

    hits = store.search("edits", embedder.embed(["Does mlplane do canary releases?"]), 3)[0]
    assert hits[0].source == "promotion.md" and "canary" in hits[0].text
    keys = store.search("edits", embedder.embed(["How do clients send an API key?"]), 10)[0]
    assert all(h.source != "api-keys.md" for h in keys)

    third = ingest(store, embedder, "edits", load_corpus(corpus_copy), settings)
    assert (third.chunks_added, third.chunks_updated, third.chunks_deleted) == (0, 0, 0)
    assert third.chunks_unchanged == third.chunks_total == store.count("edits")


def test_new_chunk_size_rechunks_every_document(rag_platform, embedder):
    store = VectorStore(rag_platform["milvus"])
    docs = load_corpus(CORPUS)
    ingest(store, embedder, "resized", docs, IngestSettings(512, 64, embedder.source))
    smaller = ingest(store, embedder, "resized", docs, IngestSettings(256, 32, embedder.source))
    assert smaller.documents_changed == len(docs)
    stored = store.fetch("resized", {i for _, ids in store.documents("resized").values() for i in ids})
    assert len(stored) == smaller.chunks_total and all(len(c.text) <= 256 for c in stored)


def test_bad_input_exits_2_naming_the_problem(rag_platform, tmp_path):
    cases = [
        (["ingest", str(tmp_path / "missing"), "--collection", "x"], "missing: no such file or directory"),
        (["ingest", str(tmp_path), "--collection", "x"], "no documents to ingest"),
        (["ingest", str(CORPUS), "--collection", "bad-name"], "--collection: got 'bad-name'"),
        (["ingest", str(CORPUS), "--collection", "x", "--chunk-size", "100", "--chunk-overlap", "100"],
         "chunk overlap must be at least 0 and less than the chunk size (100)"),
        (["ingest", "--collection", "undeclared"], "give a PATH"),
    ]
    for args, message in cases:
        proc = mlplane(rag_platform["dir"], *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in " ".join(proc.stderr.split()), (args, proc.stderr)


def test_vector_store_is_restarted_with_its_data_after_a_crash(rag_platform, embedder):
    store = VectorStore(rag_platform["milvus"])
    ingest(store, embedder, "durable", load_corpus(CORPUS / "vector-store.md"), IngestSettings(256, 32))
    count = store.count("durable")
    milvus = status(rag_platform["dir"])["components"]["milvus"]
    os.kill(milvus["pid"], signal.SIGKILL)

    def back() -> dict | None:
        now = status(rag_platform["dir"])["components"]["milvus"]
        return now if now["status"] == "ready" and now["restarts"] == milvus["restarts"] + 1 else None

    restarted = wait_for(back, 120, "the supervisor to restart Milvus Lite")
    assert restarted["url"] == milvus["url"] and restarted["pid"] != milvus["pid"]
    assert VectorStore(rag_platform["milvus"]).count("durable") == count
