"""Benchmark: retrieval through mlplane's VectorStore vs a bare MilvusClient, and Milvus Lite index settings.

    .venv/bin/python bench/retrieval.py [--sizes 10000 100000] [--queries 200]

Starts the Milvus Lite server component the way the local platform does (``milvus_lite_process``,
a temporary data dir), then:

1. **Client overhead**: the shipped corpus (examples/rag/corpus, chunks of 256/32) embedded with the
   packaged all-MiniLM-L6-v2 and ingested with mlplane's pipeline; the 27 questions of
   examples/rag/eval/qa.yaml embedded once. p50 of ``VectorStore.search`` vs ``MilvusClient.search`` with
   the same vectors, top-k, search params and output fields, interleaved; the hits must be the same.
2. **Index settings at scale**: N vectors (10k, 100k) made from the corpus chunk embeddings: random
   mixtures of two of them plus Gaussian noise (σ = 0.02 per dimension) re-normalised, so the data
   keeps the real embeddings' geometry without duplicates. Queries: held-out vectors made the same
   way. Recall@10 against exact search (numpy) and single-query p50 for HNSW with the default build
   (M 16, efConstruction 200) across search ``ef``, and for FLAT (exact). Milvus Lite builds indexes
   in the background after a flush; the timings start once they are built.

Writes bench/RESULTS.md section ``## Retrieval: VectorStore vs MilvusClient, Milvus Lite index settings``.
Embedding time is excluded everywhere (vectors are computed once, before timing).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pymilvus import DataType, MilvusClient

from _results import Report, run_context, write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/triton.py would shadow the `triton` package that torch imports: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
SECTION = "## Retrieval: VectorStore vs MilvusClient, Milvus Lite index settings"
SIGMA = 0.02
EFS = (16, 64, 128, 256, 512)
K = 10


def start_milvus(state: Path):
    from mlplane.runtime.local import process
    from mlplane.runtime.local.paths import StatePaths
    from mlplane.runtime.local.plan import milvus_lite_process

    paths = StatePaths(state)
    paths.milvus_dir.mkdir(parents=True, exist_ok=True)
    port = process.free_port()
    proc = process.spawn(milvus_lite_process(paths, "127.0.0.1", port))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            MilvusClient(uri=uri, timeout=2).list_collections()
            return proc, uri
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"Milvus Lite did not start; see {paths.log_file('milvus')}")


def p50_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def client_overhead(uri: str, embedder, rounds: int) -> tuple[float, float, bool, int]:
    from mlplane.rag.evaluation import load_qa
    from mlplane.rag.ingest import IngestSettings, ingest
    from mlplane.rag.loaders import load_corpus
    from mlplane.rag.store import _GRPC_OPTIONS, VectorStore

    store = VectorStore(uri)
    ingest(store, embedder, "corpus", load_corpus(ROOT / "examples/rag/corpus"),
           IngestSettings(256, 32, embedder.source))
    questions = embedder.embed([q.question for q in load_qa(ROOT / "examples/rag/eval/qa.yaml")])
    bare = MilvusClient(uri=uri, grpc_options=_GRPC_OPTIONS)  # the same channel options as VectorStore
    params = {"metric_type": store.index.metric, "params": store.index.search_params(5)}
    fields = ["chunk_id", "text", "source", "title"]
    same = all(
        [h.chunk_id for h in store.search("corpus", q[None, :], 5)[0]]
        == [h["entity"]["chunk_id"] for h in bare.search("corpus", data=[q], limit=5, anns_field="vector",
                                                           search_params=params,
                                         output_fields=fields)[0]]
        for q in questions)
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        for q in questions:
            ours.append(p50_ms(lambda q=q: store.search("corpus", q[None, :], 5), 1))
            theirs.append(p50_ms(lambda q=q: bare.search("corpus", data=[q], limit=5, anns_field="vector",
                                                         search_params=params, output_fields=fields), 1))
    return statistics.median(ours), statistics.median(theirs), same, store.count("corpus")


def chunk_quality(uri: str, embedder) -> tuple[list[str], int]:
    """Rows of the QA evaluation of the shipped corpus at two chunk sizes (top-5, extractive answers)."""
    from mlplane.rag.evaluation import evaluate, load_qa
    from mlplane.rag.ingest import IngestSettings, ingest
    from mlplane.rag.loaders import load_corpus
    from mlplane.rag.store import VectorStore

    store = VectorStore(uri)
    questions = load_qa(ROOT / "examples/rag/eval/qa.yaml")
    rows = []
    for size, overlap in ((256, 32), (512, 64)):
        name = f"quality_{size}"
        report = ingest(store, embedder, name, load_corpus(ROOT / "examples/rag/corpus"),
                        IngestSettings(size, overlap, embedder.source))
        ev = evaluate(store, embedder, name, questions, top_k=5)
        rows.append(f"| {size}/{overlap} | {report.chunks_total} | {ev.recall_at_k:.3f} | {ev.mrr:.3f} | "
                    f"{ev.answer_f1:.3f} | {ev.citation_accuracy:.3f} |")
    return rows, len(questions)


def synthetic(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors: random mixtures of two real embeddings plus Gaussian noise, re-normalised."""
    w = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    v = w * base[rng.integers(0, len(base), n)] + (1 - w) * base[rng.integers(0, len(base), n)]
    v += rng.normal(0, SIGMA, v.shape).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def wait_for_index(data_dir: Path, collection: str, rows: int, timeout_s: float = 900) -> None:
    """Milvus Lite builds segment indexes in the background after a flush; wait until they cover ``rows``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        covered = 0
        for f in (data_dir / "collections" / collection).rglob("*.vector.*.idx"):
            first, last = f.name.split(".")[0].split("_")[1:3]
            covered += int(last) - int(first) + 1
        if covered >= rows:
            return
        time.sleep(1)
    raise SystemExit(f"{collection}: index not built after {timeout_s:.0f}s")


def load_collection(client: MilvusClient, name: str, vectors: np.ndarray, index_type: str, params: dict,
                    data_dir: Path) -> float:
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    index = client.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type="COSINE", params=params)
    client.create_collection(name, schema=schema, index_params=index)
    started = time.perf_counter()
    for s in range(0, len(vectors), 5000):
        client.insert(name, [{"id": s + i, "vector": v} for i, v in enumerate(vectors[s:s + 5000])])
    client.flush(name)
    client.load_collection(name)
    if index_type != "FLAT":
        wait_for_index(data_dir, name, len(vectors))
    for q in vectors[:20]:  # warm up: the first searches load segments
        client.search(name, data=[q], limit=K, anns_field="vector", output_fields=["id"])
    return time.perf_counter() - started


def measure(client: MilvusClient, name: str, queries: np.ndarray, truth: np.ndarray,
            params: dict) -> tuple[float, float]:
    found, times = [], []
    for q in queries:
        t = time.perf_counter()
        res = client.search(name, data=[q], limit=K, anns_field="vector", output_fields=["id"],
                            search_params={"metric_type": "COSINE", "params": params})
        times.append((time.perf_counter() - t) * 1000)
        found.append([h["id"] for h in res[0]])
    recall = statistics.fmean(len(set(f) & set(t)) / K for f, t in zip(found, truth.tolist(), strict=True))
    return recall, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=8, help="passes over the 27 questions for the overhead")
    args = parser.parse_args()

    from mlplane.rag.embedding import Embedder
    from mlplane.spec.platform import VectorIndexSpec

    started = time.monotonic()
    default = VectorIndexSpec()
    embedder = Embedder()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-retrieval-") as tmp:
        proc, uri = start_milvus(Path(tmp))
        data_dir = Path(tmp) / "milvus" / "data"
        try:
            ours, theirs, same, chunks = client_overhead(uri, embedder, args.rounds)
            quality, n_questions = chunk_quality(uri, embedder)
            client = MilvusClient(uri=uri, grpc_options={"grpc.keepalive_permit_without_calls": 0,
                                                          "grpc.keepalive_time_ms": 120_000})
            stored = client.query("corpus", filter="", output_fields=["vector"], limit=16384)
            base = np.asarray([r["vector"] for r in stored], dtype=np.float32)
            scale_rows = []
            for n in args.sizes:
                data = synthetic(base, n, rng)
                queries = synthetic(base, args.queries, rng)
                truth = np.argsort(-(queries @ data.T), axis=1)[:, :K]
                build = load_collection(client, f"hnsw_{n}", data, "HNSW", default.build_params(), data_dir)
                for ef in EFS:
                    recall, p50 = measure(client, f"hnsw_{n}", queries, truth, {"ef": max(ef, K)})
                    scale_rows.append((n, f"HNSW M={default.m} efC={default.ef_construction}, ef={ef}", recall, p50,
                                       build))
                client.drop_collection(f"hnsw_{n}")
                build = load_collection(client, f"flat_{n}", data, "FLAT", {}, data_dir)
                recall, p50 = measure(client, f"flat_{n}", queries, truth, {})
                scale_rows.append((n, "FLAT (exact)", recall, p50, build))
                client.drop_collection(f"flat_{n}")
                print(f"{n}: done", file=sys.stderr)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    report = Report("measurement", "mlplane ms", "bare ms", "mlplane / bare")
    ratio = ours / theirs
    report.add(f"top-5 search p50, {chunks} chunks, identical hits: {'yes' if same else 'NO'}", f"{ours:.2f}",
               f"{theirs:.2f}", ratio=ratio, goal="≤ 1.10", ok=ratio <= 1.10 and same)
    lines = ["| vectors | index, search params | recall@10 | p50 ms | insert+index s | default |",
             "|---|---|---|---|---|---|"]
    for n, label, recall, p50, build in scale_rows:
        chosen = "yes" if label.endswith(f"ef={default.ef}") else ""
        lines.append(f"| {n:,} | {label} | {recall:.3f} | {p50:.2f} | {build:.1f} | {chosen} |")
    default_recalls = [r for n, label, r, _, _ in scale_rows if label.endswith(f"ef={default.ef}")]
    body = f"""{run_context()} Milvus Lite server component on 127.0.0.1, embeddings excluded from timings.

**mlplane `VectorStore.search` vs a direct `MilvusClient.search`** (same collection, vectors, top-k,
search params and output fields; interleaved, {args.rounds} × 27 questions) — {report.verdict()}:

{report.markdown()}

**Chunk size on the shipped QA set** ({n_questions} questions, top-5, extractive answers;
same as `mlplane eval`):

| chunk size/overlap | chunks | recall@5 | MRR | answer F1 | citation accuracy |
|---|---|---|---|---|---|
{chr(10).join(quality)}

**Index settings** at scale: random mixtures of two of the corpus' real chunk embeddings plus Gaussian
noise (σ = {SIGMA} per dimension), re-normalised; {args.queries} held-out noisy queries; recall@10 against
exact (numpy) search; single-query p50 through the gRPC client. Defaults (`spec.vectorStore.index`):
HNSW, COSINE, M {default.m}, efConstruction {default.ef_construction}, ef {default.ef}; their recall@10:
{", ".join(f"{r:.3f}" for r in default_recalls)} (goal ≥ 0.95: {"met" if min(default_recalls) >= 0.95 else "MISSED"}).

{chr(10).join(lines)}

Trade-off: `ef` is the search-time knob — recall rises and latency grows with it; at 100k vectors FLAT
(exact) is the slowest. `ef` below top-k is raised to top-k.

Reproduce: `.venv/bin/python bench/retrieval.py` ({time.monotonic() - started:.0f} s).
"""
    write_section(SECTION, body)
    print(body)
    return 0 if report.all_met and min(default_recalls) >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
