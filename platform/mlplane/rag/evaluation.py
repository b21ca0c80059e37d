"""Evaluate retrieval and answers against a question set: recall@k, MRR, token F1, citation accuracy.

A question set is YAML::

    questions:
      - id: q01
        question: Which command starts the local platform?
        sources: [cli.md]                  # documents that answer it (sources as ingested)
        answer: mlplane up starts it.     # a short reference answer
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlplane.rag.embedding import Embedder
from mlplane.rag.extractive import CITATION, citations, extractive_answer, tokens
from mlplane.rag.store import Hit, VectorStore
from mlplane.registry import logged_run

Answerer = Callable[[str, list[Hit]], str]
EXPERIMENT = "mlplane-eval"


class QAError(ValueError):
    """A question set that cannot be read; the message names the file, the question and the field."""


class QAItem(BaseModel):
    """One question with the documents that answer it and a reference answer."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=3)
    sources: list[str] = Field(min_length=1)
    answer: str = Field(min_length=1)


class QASet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[QAItem] = Field(min_length=1)


def load_qa(path: str | Path) -> list[QAItem]:
    """The questions of a YAML question set; ids must be unique."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QAError(f"{path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise QAError(f"{path}: cannot read as YAML ({exc})") from None
    try:
        qa = QASet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise QAError(f"{path}: {where}: {first['msg']}") from None
    ids = Counter(q.id for q in qa.questions)
    duplicates = sorted(i for i, n in ids.items() if n > 1)
    if duplicates:
        raise QAError(f"{path}: duplicate question ids {duplicates}")
    return qa.questions


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 (lower-case words, stopwords and citation markers left out)."""
    pred = Counter(tokens(CITATION.sub(" ", prediction)))
    ref = Counter(tokens(reference))
    common = sum((pred & ref).values())
    if not common:
        return 0.0
    precision, recall = common / sum(pred.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class QuestionResult:
    id: str
    question: str
    expected: list[str]
    retrieved: list[str]  # the sources of the top-k chunks, in rank order
    rank: int | None  # 1-based rank of the first chunk from an expected source; None: not in the top k
    answer: str
    f1: float
    citation_accuracy: float  # share of the answer's citations that point at an expected source


@dataclass(frozen=True)
class EvalReport:
    collection: str
    top_k: int
    recall_at_k: float
    mrr: float
    answer_f1: float
    citation_accuracy: float
    search_p50_ms: float  # embedding the question + searching, per question
    results: list[QuestionResult] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {f"recall_at_{self.top_k}": self.recall_at_k, "mrr": self.mrr, "answer_f1": self.answer_f1,
                "citation_accuracy": self.citation_accuracy, "search_p50_ms": self.search_p50_ms,
                "questions": float(len(self.results))}


def _citation_accuracy(answer: str, hits: list[Hit], expected: set[str]) -> float:
    cited = [n for n in citations(answer) if 1 <= n <= len(hits)]
    return sum(hits[n - 1].source in expected for n in cited) / len(cited) if cited else 0.0


def evaluate(store: VectorStore, embedder: Embedder, collection: str, questions: list[QAItem], top_k: int = 5,
             answerer: Answerer = extractive_answer) -> EvalReport:
    """Search ``collection`` for every question, answer it from the hits and score both."""
    results, latencies = [], []
    for q in questions:
        started = time.perf_counter()
        hits = store.search(collection, embedder.embed([q.question]), top_k)[0]
        latencies.append((time.perf_counter() - started) * 1000)
        expected = set(q.sources)
        retrieved = [h.source for h in hits]
        rank = next((i for i, s in enumerate(retrieved, start=1) if s in expected), None)
        answer = answerer(q.question, hits)
        results.append(QuestionResult(q.id, q.question, q.sources, retrieved, rank, answer,
                                      round(token_f1(answer, q.answer), 4),
                                      round(_citation_accuracy(answer, hits, expected), 4)))
    n = len(results)
    return EvalReport(
        collection=collection,
        top_k=top_k,
        recall_at_k=round(sum(r.rank is not None for r in results) / n, 4),
        mrr=round(sum(1 / r.rank for r in results if r.rank) / n, 4),
        answer_f1=round(statistics.fmean(r.f1 for r in results), 4),
        citation_accuracy=round(statistics.fmean(r.citation_accuracy for r in results), 4),
        search_p50_ms=round(statistics.median(latencies), 2),
        results=results,
    )


def log_to_mlflow(report: EvalReport, tracking_uri: str, params: dict[str, object], run_name: str | None = None,
                  experiment: str = EXPERIMENT) -> str:
    """Log ``report`` as one run (params, metrics, per-question results as ``questions.json``); its id."""
    with logged_run(tracking_uri, experiment, run_name or f"{report.collection}-top{report.top_k}",
                    tags={"mlplane.collection": report.collection},
                    params={"collection": report.collection, "top_k": report.top_k, **params},
                    metrics=report.metrics()) as run:
        mlflow.log_dict({"questions": [r.__dict__ for r in report.results]}, "questions.json")
    return str(run.info.run_id)
