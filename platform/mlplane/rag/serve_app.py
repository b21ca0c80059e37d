"""The RAG service as a Ray Serve application: ``build_app(args)`` (``args``: :class:`RagAppArgs`).

Deployments::

    Ingress ──► Embedder (@serve.batch: concurrent requests share one forward pass)
       │──────► Retriever (Milvus through mlplane.rag.store)
       └──────► Generator (local SmolLM2, extractive, or a remote OpenAI / KServe V2 server)

The Ingress is a FastAPI app with an OpenAI-compatible API: ``POST /v1/chat/completions`` (``stream:
true`` answers as server-sent events), ``POST /v1/embeddings``, ``GET /v1/models``, mlplane's
``POST /v1/retrieve`` (chunks with sources and scores) and ``GET /health``. Answers end with their
numbered sources and carry ``sources`` and ``mlplane`` (the embedder and generator versions that
answered). Errors have OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}``.
"""

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from mlplane.auth import ApiKeyMiddleware, AuthSettings, RateLimit
from mlplane.rag import api as dp
from mlplane.rag.embedding import load_embedder
from mlplane.rag.generate import GenerationError, make_generator
from mlplane.rag.openai_types import ChatCompletionRequest, EmbeddingRequest, RetrieveRequest
from mlplane.rag.serve_config import EMBEDDER, GENERATOR, INGRESS, RETRIEVER, EmbedderArgs, GeneratorArgs, RagAppArgs
from mlplane.rag.store import Hit, UnknownCollection, VectorStore, VectorStoreError
from mlplane.registry import resolve
from mlplane.spec.modelref import parse_model_ref
from mlplane.spec.platform import VectorIndexSpec

HEALTH_TIMEOUT_S = 5.0
GENERATOR_SWITCH_TIMEOUT_S = 600.0
PUBLIC_PATHS = re.compile(r"^/(?:health)?$")


@dataclass(frozen=True)
class Failure:
    """A deployment's refusal, returned (not raised) so its type survives the trip through Ray."""

    error: dp.RagError  # rag_error(what the deployment caught): plain enough to pickle


def rag_error(exc: Exception) -> dp.RagError:
    """The one mapping from what went wrong to what the client sees (status, OpenAI error type and code)."""
    if isinstance(exc, dp.RagError):
        return exc
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return dp.RagError("the request body is not valid JSON")
        first = errors[0]
        path = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return dp.InvalidBody(f"{path or 'body'}: {first.get('msg', 'invalid')}", param=path or None)
    if isinstance(exc, UnknownCollection):
        return dp.CollectionNotFound(str(exc))
    if isinstance(exc, GenerationError):
        return dp.UpstreamFailed(str(exc))
    if isinstance(exc, VectorStoreError):
        return dp.NotReady(str(exc))
    raise TypeError(f"no HTTP mapping for {type(exc).__name__}") from exc


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    """``exc`` as an OpenAI-shaped error response with the status :func:`rag_error` gives it."""
    error = rag_error(exc)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _pin(model_uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``(uri, version)``: a registry alias pinned to the version it names now."""
    resolved = resolve(tracking_uri or mlflow.get_tracking_uri(), parse_model_ref(model_uri))
    return resolved.uri, resolved.version


@serve.deployment(name=EMBEDDER)
class Embedder:
    """The embedding model; ``embed_one`` calls from concurrent requests are batched (``spec.batching``)."""

    def __init__(self, args: dict[str, Any], tracking_uri: str | None) -> None:
        cfg = EmbedderArgs.model_validate(args)
        uri, version = _pin(cfg.model_uri, tracking_uri)
        self.embedder = load_embedder(uri, tracking_uri)
        self.meta = {"model": cfg.model_uri, "uri": uri, "version": version}
        # serve.batch is annotated as returning the plain coroutine function; it is Ray's batch wrapper, with these
        self.embed_one.set_max_batch_size(cfg.max_batch_size)  # type: ignore[attr-defined]
        self.embed_one.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def embed_one(self, texts: list[str]) -> list[np.ndarray]:
        return list(await asyncio.to_thread(self.embedder.embed, texts))

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """``{"vectors": (n, dim) float32, "model", "uri", "version"}``."""
        vectors = await asyncio.gather(*(self.embed_one(t) for t in texts))
        return {"vectors": np.stack(vectors), **self.meta}

    def info(self) -> dict[str, Any]:
        return self.meta


@serve.deployment(name=RETRIEVER)
class Retriever:
    """Nearest chunks in the vector store."""

    def __init__(self, vector_store_uri: str | None, index: dict[str, Any]) -> None:
        if not vector_store_uri:
            raise ValueError("the RAG service needs a vector store: enable spec.vectorStore on the platform")
        self.store = VectorStore(vector_store_uri, VectorIndexSpec.model_validate(index))

    async def search(self, collection: str, vector: np.ndarray, top_k: int) -> list[Hit] | Failure:
        try:
            (hits,) = await asyncio.to_thread(self.store.search, collection, vector, top_k)
        except (UnknownCollection, VectorStoreError) as exc:
            return Failure(rag_error(exc))
        return hits

    def info(self) -> dict[str, Any]:
        return {"uri": self.store.uri}


@serve.deployment(name=GENERATOR)
class Generator:
    """Writes the answer; :meth:`stream` yields who answers first, then the text in pieces.

    A local generator loads ``spec.model`` pinned to its current version; ``reconfigure`` (the
    ``user_config`` of a new version) loads another one and swaps it in when it is ready.
    """

    def __init__(self, args: dict[str, Any], tracking_uri: str | None) -> None:
        self.args = GeneratorArgs.model_validate(args)
        self.tracking_uri = tracking_uri
        version = ""
        if self.args.type == "local" and self.args.model_uri:
            uri, version = _pin(self.args.model_uri, tracking_uri)
            self.args = self.args.model_copy(update={"model_uri": uri})
        self.generator = make_generator(self.args, tracking_uri, version)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        version = str(user_config.get("model_version") or "")
        if self.args.type != "local" or not version or version == self.generator.info.version:
            return
        args = self.args.model_copy(update={"model_uri": user_config["model_uri"]})
        self.generator = make_generator(args, self.tracking_uri, version)  # loaded before it answers
        self.args = args

    async def stream(self, question: str, hits: list[Hit], max_tokens: int,
                     temperature: float) -> AsyncIterator[dict[str, Any] | str | Failure]:
        yield asdict(self.generator.info)
        pieces = iter(self.generator.stream(question, hits, max_tokens, temperature))
        while True:
            try:
                piece = await asyncio.to_thread(next, pieces, None)
            except GenerationError as exc:
                yield Failure(rag_error(exc))
                return
            if piece is None:
                return
            yield piece

    def info(self) -> dict[str, Any]:
        return asdict(self.generator.info)


# --------------------------------------------------------------------------- the HTTP API
class BodyLimit:
    """413 for bodies over ``max_bytes`` (by Content-Length, and counted while streaming in)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            too_large = dp.TooLarge(f"the request body has {int(length)} bytes; at most {self.max_bytes} are accepted")
            await error_response(too_large, headers={"Connection": "close"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _base64(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def _check(result: Any) -> Any:
    if isinstance(result, Failure):
        raise result.error
    return result


async def _error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


# (method, path, Ingress method): the routes, bound to the replica's Ingress in make_api.
ROUTES = (
    ("GET", "/health", "health"),
    ("POST", "/v1/admin/generator/wait", "wait_for_generator"),
    ("GET", "/v1/models", "models"),
    ("POST", "/v1/embeddings", "embeddings"),
    ("POST", "/v1/retrieve", "retrieve"),
    ("POST", "/v1/chat/completions", "chat"),
)


def make_api(ingress: "Ingress") -> FastAPI:
    """The Ingress replica's FastAPI app: its routes, the body limit and (with auth) API keys and rate limits.

    Built per replica from its configuration (``__serve_build_asgi_app__``); no app is shared or changed later.
    """
    cfg = ingress.cfg
    api = FastAPI(title="mlplane RAG service", docs_url=None, redoc_url=None, openapi_url=None)
    api.add_exception_handler(dp.RagError, _error_handler)
    api.add_exception_handler(RequestValidationError, _error_handler)
    for method, path, name in ROUTES:
        api.add_api_route(path, getattr(ingress, name), methods=[method], response_model=None)
    api.add_middleware(BodyLimit, max_bytes=cfg.limits.max_request_bytes)
    if cfg.auth.enabled:
        assert cfg.auth.keys_file is not None
        settings = AuthSettings(keys_file=Path(cfg.auth.keys_file),
                                default_limit=RateLimit(cfg.auth.requests_per_second, cfg.auth.burst))
        api.add_middleware(ApiKeyMiddleware, settings=settings, public=PUBLIC_PATHS)
    return api


@serve.deployment(name=INGRESS)
@serve.ingress()
class Ingress:
    def __init__(self, embedder: DeploymentHandle, retriever: DeploymentHandle, generator: DeploymentHandle,
                 args: dict[str, Any]) -> None:
        self.cfg = RagAppArgs.model_validate(args)
        self.embedder, self.retriever, self.generator = embedder, retriever, generator

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_api(self)

    async def health(self) -> dict[str, Any]:
        """200 once every deployment answers; the embedder and generator that would answer now."""
        try:
            embedder, generator, retriever = await asyncio.wait_for(asyncio.gather(
                self.embedder.info.remote(), self.generator.info.remote(), self.retriever.info.remote(),
            ), HEALTH_TIMEOUT_S)
        except TimeoutError:
            raise dp.NotReady("the RAG deployments are not ready yet") from None
        return {"status": "ok", "embedder": embedder, "generator": generator, "vectorStore": retriever}

    async def wait_for_generator(self, body: dict[str, Any]) -> dict[str, Any]:
        """200 once the Generator answers with registry version ``body["version"]`` (the supervisor's
        load request after a promotion: the new ``user_config`` reconfigures the Generator replicas)."""
        wanted = str(body.get("version", ""))
        deadline = asyncio.get_running_loop().time() + GENERATOR_SWITCH_TIMEOUT_S
        while True:
            info = await self.generator.info.remote()
            if info["type"] != "local" or info["version"] == wanted:
                return {"generator": info}
            if asyncio.get_running_loop().time() > deadline:
                raise dp.NotReady(f"the generator still answers with version {info['version']}, not {wanted}")
            await asyncio.sleep(1.0)

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.cfg.name, "object": "model", "owned_by": "mlplane"}]}

    async def embeddings(self, req: EmbeddingRequest) -> dict[str, Any]:
        texts = dp.embedding_inputs(req, self.cfg.limits)
        result = await self.embedder.embed.remote(texts)
        data = []
        for i, vector in enumerate(result["vectors"]):
            value: Any = vector.tolist() if req.encoding_format == "float" else _base64(vector)
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": self.cfg.name,
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
                "mlplane": {"embedder": {k: result[k] for k in ("model", "uri", "version")}}}

    async def retrieve(self, req: RetrieveRequest) -> dict[str, Any]:
        q = dp.query_question(req.query, req.collection, req.top_k, self.cfg.limits, self.cfg.collection,
                              self.cfg.top_k)
        hits, embedder = await self._retrieve(q)
        return {"object": "list", "collection": q.collection, "data": dp.sources(hits),
                "mlplane": {"embedder": embedder}}

    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        q = dp.chat_question(req, self.cfg.limits, self.cfg.collection, self.cfg.top_k)
        hits, embedder = await self._retrieve(q)
        gen = self.cfg.generator
        max_tokens = min(req.max_completion_tokens or req.max_tokens or gen.max_tokens, gen.max_tokens)
        temperature = gen.temperature if req.temperature is None else req.temperature
        pieces = self.generator.options(stream=True).stream.remote(q.text, hits, max_tokens, temperature)
        assert isinstance(pieces, DeploymentResponseGenerator)  # stream=True: Ray streams the answer
        answering = _check(await pieces.__anext__())
        meta = {"embedder": embedder, "generator": answering, "collection": q.collection}
        cid = dp.completion_id()
        if req.stream:
            return StreamingResponse(self._events(cid, pieces, hits, meta), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        answer = "".join([_check(piece) async for piece in pieces]).strip()
        return dp.chat_completion(cid, self.cfg.name, answer, hits, meta)

    async def _events(self, cid: str, pieces: Any, hits: list[Hit], meta: dict[str, Any]) -> AsyncIterator[str]:
        name = self.cfg.name
        yield dp.chunk_event(cid, name, {"role": "assistant", "content": ""})
        async for piece in pieces:
            if isinstance(piece, Failure):
                yield dp.error_event(piece.error)
                yield dp.DONE_EVENT
                return
            yield dp.chunk_event(cid, name, {"content": piece})
        yield dp.chunk_event(cid, name, {"content": dp.sources_footer(hits)})
        yield dp.chunk_event(cid, name, {}, "stop", sources=dp.sources(hits), mlplane=meta)
        yield dp.DONE_EVENT

    async def _retrieve(self, q: dp.Question) -> tuple[list[Hit], dict[str, Any]]:
        embedded = await self.embedder.embed.remote([q.text])
        hits = _check(await self.retriever.search.remote(q.collection, embedded["vectors"][0], q.top_k))
        return hits, {k: embedded[k] for k in ("model", "uri", "version")}


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve run`` / a Serve config's ``import_path`` (``args``: :class:`RagAppArgs`)."""
    cfg = RagAppArgs.model_validate(args)
    # serve.deployment turns each class into a Deployment (with .bind); Ray's annotations keep the class type
    return Ingress.bind(  # type: ignore[attr-defined]
        Embedder.bind(cfg.embedder.model_dump(), cfg.tracking_uri),  # type: ignore[attr-defined]
        Retriever.bind(cfg.vector_store_uri, cfg.vector_index),  # type: ignore[attr-defined]
        Generator.bind(cfg.generator.model_dump(), cfg.tracking_uri),  # type: ignore[attr-defined]
        cfg.model_dump(mode="json"),
    )
