"""Ingest a corpus into a vector store collection and log the run to MLflow.

    python -m mlplane_pipelines.ingest --source DIR --collection NAME \\
        --vector-store-uri http://127.0.0.1:19530 --tracking-uri http://127.0.0.1:5000

Loads .md, .txt and .html documents, chunks them, embeds new chunks and upserts them idempotently
(see :mod:`mlplane.rag.ingest`). ``mlplane ingest`` runs it on the local platform; the cluster runs
this module in a Kubernetes Job or CronJob (``mlplane render --ingest``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from mlplane.rag.chunking import ChunkingError
from mlplane.rag.embedding import load_embedder
from mlplane.rag.ingest import IngestReport, IngestSettings, ingest
from mlplane.rag.loaders import CorpusError, load_corpus
from mlplane.rag.store import UnknownCollection, VectorStore, VectorStoreError
from mlplane.registry import logged_run
from mlplane.spec.platform import VectorIndexSpec

EXPERIMENT = "mlplane-ingest"


@dataclass(frozen=True)
class IngestRun:
    report: IngestReport
    run_id: str
    embedder: str
    load_s: float
    total_s: float


def run_ingest(source: str, collection: str, *, vector_store_uri: str, tracking_uri: str | None,
               chunk_size: int = 512, chunk_overlap: int = 64, index: VectorIndexSpec | None = None,
               embedding_model: str | None = None, experiment: str = EXPERIMENT) -> IngestRun:
    """Load, chunk, embed and upsert ``source`` into ``collection``; log params and metrics to MLflow.

    Without ``tracking_uri`` nothing is logged (``run_id`` is empty).
    """
    started = time.perf_counter()
    docs = load_corpus(source)
    embedder = load_embedder(embedding_model, tracking_uri)
    load_s = time.perf_counter() - started
    settings = IngestSettings(chunk_size=chunk_size, chunk_overlap=chunk_overlap, embedder=embedder.source)
    index = index or VectorIndexSpec()
    store = VectorStore(vector_store_uri, index)
    try:
        report = ingest(store, embedder, collection, docs, settings)
    finally:
        store.close()
    total_s = time.perf_counter() - started
    run_id = ""
    if tracking_uri:
        run_id = _log_run(tracking_uri, experiment, source, report, settings, index, load_s, total_s)
    return IngestRun(report, run_id, embedder.source, round(load_s, 3), round(total_s, 3))


def _log_run(tracking_uri: str, experiment: str, source: str, report: IngestReport, settings: IngestSettings,
             index: VectorIndexSpec,
             load_s: float, total_s: float) -> str:
    params = {
        "collection": report.collection,
        "source": source,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "embedder": settings.embedder,
        "index_type": index.type,
        "metric": index.metric,
        "index_params": json.dumps(index.build_params(), sort_keys=True),
    }
    with logged_run(tracking_uri, experiment, f"{report.collection}-{settings.chunk_size}",
                    tags={"mlplane.collection": report.collection}, params=params,
                    metrics={**report.metrics(), "load_s": round(load_s, 3), "total_s": round(total_s, 3)}) as run:
        return str(run.info.run_id)


def last_ingest_params(tracking_uri: str, collection: str, experiment: str = EXPERIMENT) -> dict[str, str]:
    """The params of the latest ingestion run into ``collection`` (empty when there is none)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlplane.collection` = '{collection}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return dict(runs[0].data.params) if runs else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlplane_pipelines.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="directory or file of .md, .txt and .html documents")
    parser.add_argument("--collection", required=True)
    parser.add_argument("--vector-store-uri", required=True, help="Milvus URI, e.g. http://milvus:19530")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; unset: log nothing")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--chunk-overlap", type=int, default=64)
    parser.add_argument("--embedding-model", default=None, help="MLflow model URI of the embedder")
    parser.add_argument("--index", default=None, help="spec.vectorStore.index as JSON (camelCase keys)")
    args = parser.parse_args(argv)

    try:
        index = VectorIndexSpec.model_validate(json.loads(args.index)) if args.index else None
        result = run_ingest(args.source, args.collection, vector_store_uri=args.vector_store_uri,
                            tracking_uri=args.tracking_uri, chunk_size=args.chunk_size,
                            chunk_overlap=args.chunk_overlap, index=index, embedding_model=args.embedding_model)
    except (CorpusError, ChunkingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (UnknownCollection, VectorStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"runId": result.run_id, "embedder": result.embedder, **result.report.__dict__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
