"""Idempotent ingestion: bring a collection in line with a corpus, re-embedding only what changed.

Each chunk carries its document's fingerprint (content + chunking + embedder). A document whose
fingerprint is unchanged is skipped; a changed one gets its new chunks embedded and written, its
stale chunks deleted and its kept chunks re-stamped; a document gone from the corpus loses its chunks.
Chunk ids derive from the source, the chunk text and the embedder, so a re-run writes nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from mlplane.rag.chunking import TextChunk, check_sizes, chunk_document
from mlplane.rag.embedding import Embedder
from mlplane.rag.loaders import Document
from mlplane.rag.store import Chunk, VectorStore


@dataclass(frozen=True)
class IngestSettings:
    """How documents become chunks and vectors; part of every document's fingerprint."""

    chunk_size: int = 512
    chunk_overlap: int = 64
    embedder: str = ""  # the embedder's source, e.g. its model URI and registry version

    def __post_init__(self) -> None:
        check_sizes(self.chunk_size, self.chunk_overlap)

    def fingerprint(self, doc: Document) -> str:
        key = f"{doc.content_hash}\x00{self.chunk_size}\x00{self.chunk_overlap}\x00{self.embedder}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]


def embedding_text(title: str, text: str) -> str:
    """What is embedded for a chunk: its document's title, then the chunk (the title disambiguates)."""
    return f"{title}\n{text}" if title and not text.startswith(f"# {title}") else text


@dataclass
class DocumentPlan:
    """What ingestion does to one source document."""

    source: str
    title: str
    fingerprint: str
    write: list[TextChunk] = field(default_factory=list)  # new chunks to embed and write
    keep: list[str] = field(default_factory=list)  # chunk ids already stored, re-stamped with the new fingerprint
    delete: list[str] = field(default_factory=list)  # stored chunk ids no longer produced
    status: str = "unchanged"  # new | changed | unchanged | deleted


def plan(docs: list[Document], stored: dict[str, tuple[set[str], set[str]]],
         settings: IngestSettings) -> list[DocumentPlan]:
    """Pure: compare the corpus with what is stored (``{source: (fingerprints, chunk ids)}``)."""
    plans = []
    for doc in docs:
        fingerprint = settings.fingerprint(doc)
        prints, old_ids = stored.get(doc.source, (set(), set()))
        if prints == {fingerprint}:
            plans.append(DocumentPlan(doc.source, doc.title, fingerprint, keep=sorted(old_ids)))
            continue
        chunks = chunk_document(f"{doc.source}\x00{settings.embedder}", doc.text,
                                settings.chunk_size, settings.chunk_overlap)
        new_ids = {c.chunk_id for c in chunks}
        plans.append(DocumentPlan(
            doc.source, doc.title, fingerprint,
            write=[c for c in chunks if c.chunk_id not in old_ids],
            keep=sorted(new_ids & old_ids),
            delete=sorted(old_ids - new_ids),
            status="changed" if old_ids else "new",
        ))
    present = {d.source for d in docs}
    for source, (_, old_ids) in sorted(stored.items()):
        if source not in present:
            plans.append(DocumentPlan(source, "", "", delete=sorted(old_ids), status="deleted"))
    return plans


@dataclass(frozen=True)
class IngestReport:
    """What one ingestion run did, with its timings in seconds."""

    collection: str
    documents: int
    documents_new: int
    documents_changed: int
    documents_unchanged: int
    documents_deleted: int
    chunks_added: int  # chunks of new documents
    chunks_updated: int  # new chunks written for changed documents
    chunks_deleted: int
    chunks_unchanged: int
    chunks_total: int
    embed_s: float
    write_s: float

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items() if k != "collection"}


def ingest(store: VectorStore, embedder: Embedder, collection: str, docs: list[Document],
           settings: IngestSettings, batch_size: int = 64) -> IngestReport:
    """Bring ``collection`` in line with ``docs`` (created on first use); see the module docstring."""
    store.ensure_collection(collection, embedder.dim)
    plans = plan(docs, store.documents(collection), settings)

    embed_s = write_s = 0.0
    for p in plans:
        started = time.perf_counter()
        vectors = embedder.embed([embedding_text(p.title, c.text) for c in p.write], batch_size=batch_size)
        embed_s += time.perf_counter() - started
        started = time.perf_counter()
        store.upsert(collection, [Chunk(c.chunk_id, c.text, p.source, p.fingerprint, np.asarray(v), p.title)
                                  for c, v in zip(p.write, vectors, strict=True)])
        if p.status == "changed" and p.keep:  # kept chunks take the new fingerprint
            store.upsert(collection, [Chunk(c.chunk_id, c.text, c.source, p.fingerprint, c.vector, p.title)
                                      for c in store.fetch(collection, p.keep)])
        store.delete(collection, p.delete)
        write_s += time.perf_counter() - started

    def count(status: str) -> int:
        return sum(p.status == status for p in plans)

    return IngestReport(
        collection=collection,
        documents=len(docs),
        documents_new=count("new"),
        documents_changed=count("changed"),
        documents_unchanged=count("unchanged"),
        documents_deleted=count("deleted"),
        chunks_added=sum(len(p.write) for p in plans if p.status == "new"),
        chunks_updated=sum(len(p.write) for p in plans if p.status == "changed"),
        chunks_deleted=sum(len(p.delete) for p in plans),
        chunks_unchanged=sum(len(p.keep) for p in plans),
        chunks_total=store.count(collection),
        embed_s=round(embed_s, 3),
        write_s=round(write_s, 3),
    )
