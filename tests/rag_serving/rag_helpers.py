"""Test data and helpers of the RAG serving tests."""

from __future__ import annotations

import json

import httpx

CHUNKS = [
    ("up.md", "Starting a platform", "mlplane up starts a supervisor daemon and an MLflow tracking server with a "
     "model registry. It binds 127.0.0.1 and writes its state to the .mlplane directory."),
    ("promote.md", "Promoting a model", "mlplane promote moves the champion alias to another registered version. "
     "The running server loads the new version next to the old one and switches with zero failed requests."),
    ("batching.md", "Adaptive batching", "The embedder groups concurrent requests into one batch. The batch size "
     "and the longest wait come from spec.batching in the deployment."),
    ("down.md", "Stopping", "mlplane down stops every component and checks that no process is left behind."),
]
COLLECTION = "docs"


def fill_collection(uri: str, collection: str = COLLECTION) -> None:
    """The test corpus, embedded with the packaged embedder, in ``collection``."""
    from mlplane.rag.embedding import Embedder
    from mlplane.rag.store import Chunk, VectorStore

    store = VectorStore(uri)
    vectors = Embedder().embed([text for _, _, text in CHUNKS])
    store.ensure_collection(collection, vectors.shape[1])
    store.upsert(collection, [Chunk(chunk_id=f"{source}#0", text=text, source=source, doc_hash=source, vector=v,
                                    title=title) for (source, title, text), v in zip(CHUNKS, vectors, strict=True)])
    store.close()


def sse_events(response: httpx.Response) -> list[dict | str]:
    """The payloads of a server-sent event stream, in order ('[DONE]' as a string)."""
    events: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
