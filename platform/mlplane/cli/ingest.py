"""``mlplane ingest`` and ``mlplane eval``: fill a vector store collection, then measure it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from mlplane.auth.mlflow import use_platform_credentials
from mlplane.cli.toolkit import EXIT_RUNTIME, Output, OutputOpt, StateDirOpt, emit, err, fail, out
from mlplane.core.statedir import resolve_state_dir
from mlplane.k8s.ingest import IngestRenderError, render_ingest
from mlplane.rag.chunking import ChunkingError, check_sizes
from mlplane.rag.loaders import CorpusError, load_corpus
from mlplane.runtime.local import control
from mlplane.runtime.local.paths import StatePaths
from mlplane.spec import Platform, SpecError, load_file
from mlplane.spec.platform import check_collection_name

PlatformOpt = typer.Option(None, "--platform",
                           help="Platform spec (YAML): vector store, index and collection settings "
                                "(default: the running platform's).")
CollectionOpt = typer.Option(..., "--collection", "-c", help="Vector store collection.")


def _platform(state_dir: Path | None, platform_file: Path | None) -> Platform:
    """The Platform of ``--platform``, else the one the local platform runs with, else the default."""
    paths = StatePaths(resolve_state_dir(state_dir))
    file = platform_file or (paths.platform_file if paths.platform_file.exists() else None)
    if file is None:
        return Platform.default()
    try:
        platforms = [d for d in load_file(file) if isinstance(d, Platform)]
    except SpecError as exc:
        raise fail(str(exc)) from None
    if len(platforms) != 1:
        raise fail(f"--platform {file}: expected one Platform document, found {len(platforms)}")
    return platforms[0]


def _uris(state_dir: Path | None, platform: Platform) -> tuple[str, str | None]:
    """``(vector store URI, MLflow tracking URI or None)`` of the platform."""
    from mlplane.rag.store import VectorStoreError  # needs pymilvus, the `vector` extra

    try:
        vector_uri = control.vector_store_uri(state_dir, platform)
    except VectorStoreError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    tracking = platform.spec.tracking
    if tracking.mode == "external":
        return vector_uri, tracking.uri
    state = control.read_state(StatePaths(resolve_state_dir(state_dir))) or {}
    if state.get("trackingUri"):  # the platform's MLflow: its credentials when auth is on (mlplane.auth.mlflow)
        use_platform_credentials(state_dir)
    return vector_uri, state.get("trackingUri") or None


def _collection_name(name: str) -> str:
    try:
        return check_collection_name(name)
    except ValueError as exc:
        raise fail(f"--collection: got '{name}'; {exc}") from None


def ingest(
    path: Path | None = typer.Argument(None, help="Directory or file of .md, .txt and .html documents "
                                                  "(default: the collection's spec.vectorStore.collections[].source)."),
    collection: str = CollectionOpt,
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Characters per chunk (default: the "
                                          "collection's chunkSize in the Platform, else 512)."),
    chunk_overlap: int | None = typer.Option(None, "--chunk-overlap", help="Characters shared by adjacent chunks "
                                             "(default: the collection's chunkOverlap, else 64)."),
    state_dir: Path | None = StateDirOpt,
    platform_file: Path | None = PlatformOpt,
    output: Output = OutputOpt,
) -> None:
    """Load, chunk, embed and upsert documents into a collection; log the run to MLflow (mlplane-ingest).

    Idempotent: a second run writes nothing, a changed document replaces its chunks and a document
    gone from PATH loses its chunks.
    """
    from mlplane.rag.store import VectorStoreError  # needs pymilvus, the `vector` extra
    from mlplane_pipelines.ingest import run_ingest  # the `vector` extra, and mlflow (seconds to import)

    collection = _collection_name(collection)
    platform = _platform(state_dir, platform_file)
    declared = platform.spec.vector_store.collection(collection)
    source = str(path) if path is not None else (declared.source if declared else None)
    if source is None:
        raise fail(f"give a PATH to ingest: collection '{collection}' is not in the Platform's "
                    "spec.vectorStore.collections", 2)
    size = chunk_size if chunk_size is not None else (declared.chunk_size if declared else 512)
    overlap = chunk_overlap if chunk_overlap is not None else (declared.chunk_overlap if declared else 64)
    try:
        check_sizes(size, overlap)
        load_corpus(source)  # fails fast on a missing path or an empty corpus, before the embedder loads
    except ChunkingError as exc:
        raise fail(f"--chunk-size/--chunk-overlap: {exc}") from None
    except CorpusError as exc:
        raise fail(str(exc)) from None
    vector_uri, tracking_uri = _uris(state_dir, platform)
    store = platform.spec.vector_store
    try:
        with err.status(f"Ingesting {source} into '{collection}'…"):
            result = run_ingest(source, collection, vector_store_uri=vector_uri, tracking_uri=tracking_uri,
                                chunk_size=size, chunk_overlap=overlap, index=store.index,
                                embedding_model=store.embedding_model)
    except (CorpusError, ChunkingError) as exc:
        raise fail(str(exc)) from None
    except VectorStoreError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    r = result.report
    if output is not Output.table:
        emit({"runId": result.run_id, "embedder": result.embedder, **r.__dict__}, output)
        return
    t = Table(title=f"Ingested {source} into '{collection}' (chunks of {size}, overlap {overlap})",
              title_justify="left")
    for col in ("", "NEW/ADDED", "CHANGED/UPDATED", "DELETED", "UNCHANGED", "TOTAL"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("documents", str(r.documents_new), str(r.documents_changed), str(r.documents_deleted),
              str(r.documents_unchanged), str(r.documents))
    t.add_row("chunks", str(r.chunks_added), str(r.chunks_updated), str(r.chunks_deleted),
              str(r.chunks_unchanged), str(r.chunks_total))
    out.print(t)
    out.print(f"embedder {result.embedder}; embedding {r.embed_s:.2f}s, writing {r.write_s:.2f}s, "
              f"total {result.total_s:.2f}s", highlight=False)
    if result.run_id:
        out.print(f"MLflow run {result.run_id} (experiment mlplane-ingest) at {tracking_uri}", highlight=False)


def rag_eval(
    collection: str = CollectionOpt,
    qa: Path = typer.Option(..., "--qa", help="Question set (YAML): questions with expected sources and answers."),
    top_k: int = typer.Option(5, "--top-k", min=1, max=100, help="Chunks retrieved per question."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Chunk size the collection was ingested "
                                          "with, logged as a param (default: read from its last ingest run)."),
    chunk_overlap: int | None = typer.Option(None, "--chunk-overlap", help="Chunk overlap, as --chunk-size."),
    run_name: str | None = typer.Option(None, "--run-name", help="MLflow run name (default: COLLECTION-topK)."),
    state_dir: Path | None = StateDirOpt,
    platform_file: Path | None = PlatformOpt,
    output: Output = OutputOpt,
) -> None:
    """Score retrieval (recall@k, MRR) and extractive answers (token F1, citation accuracy) on a question set.

    The run is logged to MLflow (experiment mlplane-eval): evaluate two collections, e.g. chunk sizes 256
    and 512, and compare the runs side by side.
    """
    from mlplane.rag.embedding import load_embedder  # mlflow: seconds to import, only this command needs it
    from mlplane.rag.evaluation import QAError, evaluate, load_qa, log_to_mlflow  # the `vector` extra
    from mlplane.rag.store import UnknownCollection, VectorStore, VectorStoreError  # the `vector` extra
    from mlplane_pipelines.ingest import last_ingest_params  # the `vector` extra

    collection = _collection_name(collection)
    try:
        questions = load_qa(qa)
    except QAError as exc:
        raise fail(f"--qa: {exc}") from None
    platform = _platform(state_dir, platform_file)
    vector_uri, tracking_uri = _uris(state_dir, platform)
    store = VectorStore(vector_uri, platform.spec.vector_store.index)
    try:
        existing = store.collections()
        if collection not in existing:
            raise fail(str(UnknownCollection(collection, existing)))
        ingested = last_ingest_params(tracking_uri, collection) if tracking_uri else {}
        params = _chunk_params(collection, ingested, chunk_size, chunk_overlap)
        embedder = load_embedder(platform.spec.vector_store.embedding_model, tracking_uri)
        with err.status(f"Evaluating '{collection}' on {len(questions)} questions…"):
            report = evaluate(store, embedder, collection, questions, top_k)
    except UnknownCollection as exc:
        raise fail(str(exc)) from None
    except VectorStoreError as exc:
        raise fail(str(exc), EXIT_RUNTIME) from None
    finally:
        store.close()
    run_id = ""
    if tracking_uri:
        run_id = log_to_mlflow(report, tracking_uri, {**params, "embedder": embedder.source, "qa": str(qa),
                                                      "answerer": "extractive"}, run_name)
    if output is not Output.table:
        emit({"runId": run_id, **report.metrics(), "results": [r.__dict__ for r in report.results]}, output)
        return
    _print_report(report, params, run_id, tracking_uri)


def _chunk_params(collection: str, ingested: dict[str, str], chunk_size: int | None,
                  chunk_overlap: int | None) -> dict[str, Any]:
    """Chunk settings to log: the flags, checked against the collection's last ingest run when there is one."""
    params: dict[str, Any] = {}
    for key, flag, given in (("chunk_size", "--chunk-size", chunk_size), ("chunk_overlap", "--chunk-overlap",
                                                                          chunk_overlap)):
        known = ingested.get(key)
        if given is not None and known is not None and str(given) != known:
            raise fail(f"{flag}: got {given}, but collection '{collection}' was last ingested with {known}; "
                        f"re-ingest it with {flag} {given} or evaluate another collection", 2)
        value = given if given is not None else known
        if value is not None:
            params[key] = value
    return params


def _print_report(report: Any, params: dict[str, Any], run_id: str, tracking_uri: str | None) -> None:
    t = Table(title=f"'{report.collection}': top {report.top_k} per question", title_justify="left")
    for col in ("ID", "RANK", "F1", "CITATIONS", "QUESTION"):
        t.add_column(col, justify="left" if col in ("ID", "QUESTION") else "right", overflow="fold")
    for r in report.results:
        t.add_row(r.id, str(r.rank or "-"), f"{r.f1:.2f}", f"{r.citation_accuracy:.2f}", r.question)
    out.print(t)
    s = Table(title="Summary", title_justify="left")
    for col in (f"RECALL@{report.top_k}", "MRR", "ANSWER F1", "CITATION ACC", "SEARCH P50 MS", "CHUNK SIZE"):
        s.add_column(col, justify="right")
    s.add_row(f"{report.recall_at_k:.3f}", f"{report.mrr:.3f}", f"{report.answer_f1:.3f}",
              f"{report.citation_accuracy:.3f}", f"{report.search_p50_ms:.1f}", str(params.get("chunk_size", "?")))
    out.print(s)
    if run_id:
        out.print(f"MLflow run {run_id} (experiment mlplane-eval) at {tracking_uri}", highlight=False)


def render_ingest_objects(collection: str, platform_file: Path | None) -> list[dict[str, Any]]:
    """``mlplane render --ingest``: the collection's Job (and CronJob) for the cluster."""
    if platform_file is None:
        raise fail("--ingest needs --platform FILE: the Platform that declares the collection")
    platform = _platform(None, platform_file)
    try:
        return render_ingest(platform, collection)
    except IngestRenderError as exc:
        raise fail(f"{platform_file}: {exc}") from None
