"""The vector store as mlplane uses it: one Milvus collection per corpus, chunks keyed by a stable id.

The same client code talks to the local Milvus Lite server component and to a Milvus in the cluster
(``MilvusClient(uri="http://HOST:PORT")``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from mlplane.spec.platform import VECTOR_STORE_TOKEN_ENV, VectorIndexSpec

VECTOR_FIELD = "vector"
# Longest text Milvus keeps per field (VARCHAR max_length counts bytes of UTF-8).
MAX_TEXT_BYTES = 8192
_OUTPUT_FIELDS = ["chunk_id", "text", "source", "title"]
_COLLECTION_NOT_FOUND = 100  # Milvus's error code for an unknown collection
_PAGE = 1000
# pymilvus pings every 10 s even when idle; gRPC servers (Milvus Lite's) answer that with GOAWAY
# "too_many_pings". Ping only during calls, and rarely.
_GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": 0, "grpc.keepalive_time_ms": 120_000}


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; ``score`` is the similarity (higher is closer)."""

    chunk_id: str
    text: str
    source: str
    score: float
    title: str = ""


@dataclass(frozen=True)
class Chunk:
    """A chunk to store: its id, text, source document, the document's content hash and its vector."""

    chunk_id: str
    text: str
    source: str
    doc_hash: str
    vector: np.ndarray
    title: str = ""


class UnknownCollection(Exception):
    """A collection that does not exist; the message names it and the ones that do."""

    def __init__(self, collection: str, existing: Sequence[str]) -> None:
        self.collection = collection
        self.existing = sorted(existing)
        known = ", ".join(self.existing) if self.existing else "none"
        super().__init__(f"collection '{collection}' does not exist (existing collections: {known}); "
                         f"create it with `mlplane ingest PATH --collection {collection}`")


class VectorStoreError(Exception):
    """The vector store refused a request or could not be reached; the message says why."""


class VectorStore:
    """Collections of chunks in Milvus, indexed and searched with one set of index settings."""

    def __init__(self, uri: str, index: VectorIndexSpec | None = None, timeout_s: float = 30.0,
                 token: str | None = None) -> None:
        self.uri = uri
        self.index = index or VectorIndexSpec()
        self._known: set[str] = set()  # collections seen to exist
        # In the cluster the Milvus token reaches the pod from the Platform's `vectorStore.tokenSecret`
        # (a secretKeyRef env var); never in the URI, the spec or a log line.
        token = token if token is not None else os.environ.get(VECTOR_STORE_TOKEN_ENV, "")
        try:
            self._client = MilvusClient(uri=uri, token=token, timeout=timeout_s, grpc_options=_GRPC_OPTIONS)
        except MilvusException as exc:
            raise VectorStoreError(f"cannot connect to the vector store at {uri}: {exc.message}") from None

    def close(self) -> None:
        self._client.close()

    def collections(self) -> list[str]:
        """Names of every collection, sorted."""
        return sorted(self._client.list_collections())

    def search(self, collection: str, vectors: np.ndarray, top_k: int) -> list[list[Hit]]:
        """The ``top_k`` nearest chunks for each row of ``vectors``, closest first."""
        self._check_exists(collection)
        data = np.asarray(vectors, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        try:
            results = self._client.search(
                collection, data=list(data), limit=top_k, anns_field=VECTOR_FIELD,
                output_fields=_OUTPUT_FIELDS,
                search_params={"metric_type": self.index.metric, "params": self.index.search_params(top_k)},
            )
        except MilvusException as exc:
            raise self._error(collection, exc) from None
        return [[Hit(chunk_id=h["entity"]["chunk_id"], text=h["entity"]["text"], source=h["entity"]["source"],
                     score=float(h["distance"]), title=h["entity"].get("title") or "") for h in hits]
                for hits in results]

    def _check_exists(self, collection: str) -> None:
        """Once per collection (then cached): an unknown one is refused before pymilvus logs an RPC error."""
        if collection in self._known:
            return
        try:
            exists = self._client.has_collection(collection)
        except MilvusException as exc:
            raise VectorStoreError(f"vector store at {self.uri}: {exc.message}") from None
        if not exists:
            raise UnknownCollection(collection, self.collections())
        self._known.add(collection)

    def ensure_collection(self, collection: str, dim: int) -> bool:
        """Create ``collection`` with this store's index unless it exists; True when it was created."""
        if self._client.has_collection(collection):
            return False
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=1024)
        schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)
        params = self._client.prepare_index_params()
        params.add_index(VECTOR_FIELD, index_type=self.index.type, metric_type=self.index.metric,
                         params=self.index.build_params())
        try:
            self._client.create_collection(collection, schema=schema, index_params=params)
        except MilvusException as exc:
            raise VectorStoreError(f"cannot create collection '{collection}': {exc.message}") from None
        return True

    def drop_collection(self, collection: str) -> None:
        self._known.discard(collection)
        self._client.drop_collection(collection)

    def documents(self, collection: str) -> dict[str, tuple[set[str], set[str]]]:
        """``{source: (document hashes, chunk ids)}`` of everything stored in ``collection``.

        A consistent document has one hash on all its chunks; more mean an interrupted update.
        """
        docs: dict[str, tuple[set[str], set[str]]] = {}
        # Milvus Lite has no MVCC timestamps; pymilvus warns on every iterator, then does the right thing.
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
        try:
            iterator = self._client.query_iterator(collection, batch_size=_PAGE, filter="",
                                                   output_fields=["chunk_id", "source", "doc_hash"])
        except MilvusException as exc:
            raise self._error(collection, exc) from None
        try:
            while rows := iterator.next():
                for row in rows:
                    hashes, ids = docs.setdefault(row["source"], (set(), set()))
                    hashes.add(row["doc_hash"])
                    ids.add(row["chunk_id"])
        finally:
            iterator.close()
        return docs

    def fetch(self, collection: str, chunk_ids: Iterable[str]) -> list[Chunk]:
        """The stored chunks with these ids, vectors included (unknown ids are left out)."""
        ids = sorted(chunk_ids)
        out = []
        for start in range(0, len(ids), _PAGE):
            try:
                rows = self._client.get(collection, ids=ids[start:start + _PAGE],
                                        output_fields=[*_OUTPUT_FIELDS, "doc_hash", VECTOR_FIELD])
            except MilvusException as exc:
                raise self._error(collection, exc) from None
            out += [Chunk(chunk_id=r["chunk_id"], text=r["text"], source=r["source"], doc_hash=r["doc_hash"],
                          vector=np.asarray(r[VECTOR_FIELD], dtype=np.float32), title=r.get("title") or "")
                    for r in rows]
        return out

    def upsert(self, collection: str, chunks: Iterable[Chunk]) -> int:
        """Insert or replace ``chunks`` by id; returns how many were written."""
        rows = [{"chunk_id": c.chunk_id, VECTOR_FIELD: c.vector.astype(np.float32).tolist(), "text": c.text,
                 "source": c.source, "title": c.title, "doc_hash": c.doc_hash} for c in chunks]
        for start in range(0, len(rows), _PAGE):
            try:
                self._client.upsert(collection, rows[start:start + _PAGE])
            except MilvusException as exc:
                raise self._error(collection, exc) from None
        return len(rows)

    def delete(self, collection: str, chunk_ids: Iterable[str]) -> int:
        """Remove chunks by id; returns how many ids were asked for."""
        ids = sorted(chunk_ids)
        for start in range(0, len(ids), _PAGE):
            try:
                self._client.delete(collection, ids=ids[start:start + _PAGE])
            except MilvusException as exc:
                raise self._error(collection, exc) from None
        return len(ids)

    def count(self, collection: str) -> int:
        """Chunks stored in ``collection``."""
        try:
            rows = self._client.query(collection, filter="", output_fields=["count(*)"])
        except MilvusException as exc:
            raise self._error(collection, exc) from None
        return int(rows[0]["count(*)"]) if rows else 0

    def _error(self, collection: str, exc: MilvusException) -> Exception:
        if exc.code == _COLLECTION_NOT_FOUND or "does not exist" in str(exc.message):
            self._known.discard(collection)
            return UnknownCollection(collection, self.collections())
        return VectorStoreError(f"vector store at {self.uri}, collection '{collection}': {exc.message}")
