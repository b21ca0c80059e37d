"""The RAG service's dataplane, apart from transport: typed errors (mapped to HTTP status in one
place), request checks, and the OpenAI-shaped responses and stream chunks. Pure: no I/O."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlplane.rag.openai_types import ChatCompletionRequest, EmbeddingRequest, error_body
from mlplane.rag.serve_config import LimitArgs
from mlplane.rag.store import Hit


class RagError(Exception):
    """A request the service refuses; ``status``, ``type`` and ``code`` go into the OpenAI error body."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class EmptyQuestion(RagError):
    code = "empty_question"


class NoCollection(RagError):
    code = "collection_required"


class TooLarge(RagError):
    status = 413
    code = "input_too_large"


class CollectionNotFound(RagError):
    status = 404
    code = "collection_not_found"


class InvalidBody(RagError):
    status = 422
    code = "invalid_body"


class UpstreamFailed(RagError):
    status = 502
    type = "upstream_error"
    code = "generator_failed"


class NotReady(RagError):
    status = 503
    type = "unavailable"
    code = "not_ready"


@dataclass(frozen=True)
class Question:
    text: str
    collection: str
    top_k: int


def _collection(requested: str | None, default: str | None, param: str) -> str:
    collection = requested or default
    if not collection:
        raise NoCollection("no collection given and the deployment has no default (spec.retrieval.collection); "
                           "send `collection` in the body", param=param)
    return collection


def chat_question(req: ChatCompletionRequest, limits: LimitArgs, default_collection: str | None,
                  default_top_k: int) -> Question:
    """The question (the last user message) and where to look for its answer."""
    total = sum(len(m.text()) for m in req.messages)
    if total > limits.max_input_chars:
        raise TooLarge(f"messages hold {total} characters; at most {limits.max_input_chars} are accepted",
                       param="messages")
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        raise EmptyQuestion("messages contain no user message to answer", param="messages")
    text = users[-1].text().strip()
    if not text:
        raise EmptyQuestion("the question (the last user message) is empty", param="messages")
    if len(text) > limits.max_question_chars:
        raise TooLarge(f"the question has {len(text)} characters; at most {limits.max_question_chars} are "
                       "accepted", param="messages")
    return Question(text, _collection(req.collection, default_collection, "collection"), req.top_k or default_top_k)


def query_question(query: str, collection: str | None, top_k: int | None, limits: LimitArgs,
                   default_collection: str | None, default_top_k: int) -> Question:
    text = query.strip()
    if not text:
        raise EmptyQuestion("`query` is empty", param="query")
    if len(text) > limits.max_question_chars:
        raise TooLarge(f"`query` has {len(text)} characters; at most {limits.max_question_chars} are accepted",
                       param="query")
    return Question(text, _collection(collection, default_collection, "collection"), top_k or default_top_k)


def embedding_inputs(req: EmbeddingRequest, limits: LimitArgs) -> list[str]:
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts:
        raise EmptyQuestion("`input` is an empty list", param="input")
    if len(texts) > limits.max_embedding_inputs:
        raise TooLarge(f"`input` has {len(texts)} texts; at most {limits.max_embedding_inputs} per request",
                       param="input")
    total = sum(len(t) for t in texts)
    if total > limits.max_input_chars:
        raise TooLarge(f"`input` holds {total} characters; at most {limits.max_input_chars} are accepted",
                       param="input")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise EmptyQuestion(f"`input` has empty texts at positions {empty}", param="input")
    return texts


# --------------------------------------------------------------------------- responses
def sources(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """The retrieved chunks as the answer's numbered sources ([n] in the answer cites number n)."""
    return [{"index": i, "source": h.source, "title": h.title, "chunk_id": h.chunk_id, "score": round(h.score, 6),
             "text": h.text} for i, h in enumerate(hits, 1)]


def sources_footer(hits: Sequence[Hit]) -> str:
    """Appended to every answer, so any OpenAI client shows where it came from."""
    if not hits:
        return "\n\nSources: none found."
    lines = [f"[{i}] {h.source}" + (f" ({h.title})" if h.title else "") for i, h in enumerate(hits, 1)]
    return "\n\nSources:\n" + "\n".join(lines)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def chat_completion(cid: str, model: str, answer: str, hits: Sequence[Hit], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer + sources_footer(hits)}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "sources": sources(hits),
        "mlplane": meta,
    }


def chunk_event(cid: str, model: str, delta: dict[str, Any], finish_reason: str | None = None,
                **extra: Any) -> str:
    """One server-sent event of a streamed chat completion."""
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
    return f"data: {json.dumps(chunk)}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def error_event(error: RagError) -> str:
    """An error after the stream started (the status line is already sent)."""
    return f"data: {json.dumps(error.body())}\n\n"
