"""mlplane's KServe ``ModelServer``: one MLflow pyfunc model, V2 over HTTP and gRPC, version swaps.

What differs from a stock ``kserve.ModelServer`` (0.21):

* both servers bind ``--host`` (kserve hard-codes ``0.0.0.0`` / ``[::]``);
* model metadata carries ``versions`` and ``platform`` on HTTP and gRPC;
* **model control is separate from data.** No client can load, unload or switch models: on the public
  HTTP port every ``/v2/repository/...`` path answers 403 with a JSON message (checked before the API
  key, so it holds with no key, a client key or a revoked key, and kserve's repository routes are not
  even registered there); over gRPC the ``Repository*`` RPCs answer ``PERMISSION_DENIED``; server
  metadata advertises no repository extension. Version swaps are served only on ``--control-socket``:
  a second, small HTTP app on a Unix socket, created 0600 in a 0700 directory owned by this user (the
  local supervisor reaches it with ``httpx.AsyncHTTPTransport(uds=...)``). There
  ``POST /v2/repository/models/{name}/load`` takes ``{"parameters": {"model_uri", "model_version"}}``
  and swaps the served version in place (load + warm-up off the event loop, then one dict update).
  Without ``--control-socket`` (the cluster: KServe rolls pods to change versions, and the operator
  never calls a model server) there is no control listener at all;
* request bodies are capped by a pure ASGI middleware; gRPC messages by the channel option; every
  request is checked before a tensor is built (datatypes as the protocol spells them, non-negative
  shapes, shape x datatype bytes against ``--max-request-bytes``, JSON depth, values that fit their
  datatype: :mod:`.protocol`), the inference and versioned routes are mlplane's own (:mod:`.rest`),
  gRPC ``model_version`` must be the served one (else ``NOT_FOUND``) and a model's failure never drops
  the connection;
* with ``--auth-keys-file``, HTTP and gRPC requests need an API key and share per-key rate limits
  (:mod:`mlplane.auth`); liveness, readiness and ``/metrics`` stay open;
* per-request logging (timing middleware, gRPC logging interceptor, access log) is opt-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from concurrent import futures
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import grpc
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse
from grpc import aio
from grpc_interceptor.exceptions import ResourceExhausted
from kserve import ModelRepository, ModelServer
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    generic_exception_handler,
    inference_error_handler,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from mlplane.auth import ApiKeyMiddleware, Authenticator, AuthSettings, RateLimit
from mlplane.auth.grpc_auth import ApiKeyInterceptor
from mlplane.core.signature import SignatureError
from mlplane.features.online import OnlineFeatures, parse_features

from .control import (
    CONTROL_REFUSED,
    ControlRefusalInterceptor,
    ControlRefusalMiddleware,
    bind_control_socket,
    is_control_path,
)
from .limits import MaxBodySizeMiddleware
from .model import EntityNotFoundError, PyfuncModel, check_version, version_from_uri
from .protocol import RequestTooLarge, check_tensor
from .rest import V2Routes
from .settings import ServingSettings

__all__ = ["PyfuncModelServer", "SwappableModelRepository", "serve"]

log = logging.getLogger("mlplane.serving")


# --------------------------------------------------------------------------------------------
# Repository with in-place version swaps
# --------------------------------------------------------------------------------------------
class SwappableModelRepository(ModelRepository):
    """Holds the served :class:`PyfuncModel` objects and swaps a model's version in place.

    A swap loads and warms up the new version in a worker thread (the event loop keeps serving),
    then replaces the entry with one dict assignment. Requests that already hold the old object
    finish on it. Swaps of one server are serialized.
    """

    def __init__(self) -> None:
        super().__init__(models_dir="")
        self._swap_lock = asyncio.Lock()
        self._unloaded: dict[str, PyfuncModel] = {}  # what an unload removed: a later load brings it back
        self._executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplane-load")

    async def swap(
        self, name: str, model_uri: str | None = None, model_version: str | None = None
    ) -> PyfuncModel:
        async with self._swap_lock:
            current = self.get_model(name) or self._unloaded.get(name)
            if not isinstance(current, PyfuncModel):
                raise ModelNotFound(name)
            uri = model_uri or current.model_uri
            version = model_version or version_from_uri(uri)
            if version is None:
                if uri != current.model_uri:
                    raise InvalidInput(
                        f"cannot tell the version of {uri!r}: "
                        "pass parameters.model_version in the load request"
                    )
                version = current.version
            new = PyfuncModel(name, uri, version, current.features)
            new.enable_latency_logging = current.enable_latency_logging
            await asyncio.get_running_loop().run_in_executor(self._executor, new.load)
            self.update(new, name)
            self._unloaded.pop(name, None)
            log.info(
                "model %s now serves version %s (%s), was version %s", name, version, uri, current.version
            )
            return new

    async def unload_model(self, name: str) -> None:
        """Stop serving ``name`` (its readiness answers 404 until a load brings the same model back)."""
        async with self._swap_lock:
            current = self.get_model(name)
            if not isinstance(current, PyfuncModel):
                raise ModelNotFound(name)
            self._unloaded[name] = current
            self.unload(name)
            log.warning("model %s (version %s) unloaded", name, current.version)

    async def load(self, name: str) -> bool:  # kserve's body-less load (gRPC RepositoryModelLoad)
        await self.swap(name)
        return True


def parse_load_body(body: bytes) -> tuple[str | None, str | None]:
    """``{"parameters": {"model_uri": ..., "model_version": ...}}`` (both optional) or an empty body."""
    if not body.strip():
        return None, None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"load request body is not valid JSON: {exc}") from None
    params = doc.get("parameters") if isinstance(doc, dict) else None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput('load request: "parameters" must be an object')
    uri, version = params.get("model_uri"), params.get("model_version")
    for key, value in (("model_uri", uri), ("model_version", version)):
        if value is not None and not (isinstance(value, str | int) and str(value)):
            raise InvalidInput(f"load request: parameters.{key} must be a non-empty string")
    return (str(uri) if uri is not None else None), (str(version) if version is not None else None)


# --------------------------------------------------------------------------------------------
# Model control: refused on the public ports, served on the control socket only
# --------------------------------------------------------------------------------------------
def control_application(repository: SwappableModelRepository) -> FastAPI:
    """The control socket's app: ``POST /v2/repository/models/{name}/load`` and ``.../unload``, nothing else."""
    app = FastAPI(title="mlplane model control", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=ORJSONResponse)

    async def load(model_name: str, request: Request) -> dict[str, str]:
        uri, version = parse_load_body(await request.body())
        model = await repository.swap(model_name, uri, version)
        return {"name": model_name, "version": model.version, "model_uri": model.model_uri}

    async def unload(model_name: str) -> dict[str, str]:
        await repository.unload_model(model_name)
        return {"name": model_name, "status": "unloaded"}

    app.add_api_route("/v2/repository/models/{model_name}/load", load, methods=["POST"])
    app.add_api_route("/v2/repository/models/{model_name}/unload", unload, methods=["POST"])
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(ModelNotFound, _model_not_found)
    app.add_exception_handler(EntityNotFoundError, _model_not_found)
    app.add_exception_handler(InferenceError, inference_error_handler)  # e.g. a model that fails to load
    app.add_exception_handler(Exception, generic_exception_handler)
    return app


class _ControlServer(uvicorn.Server):
    """uvicorn on the control socket; the public server owns the signals, and this one stops with it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# --------------------------------------------------------------------------------------------
# Dataplane and gRPC servicer: metadata with versions and platform
# --------------------------------------------------------------------------------------------
class PyfuncDataPlane(DataPlane):
    def metadata(self) -> dict[str, Any]:
        # Clients cannot use the model-repository extension (see the module docstring): not advertised.
        return {**super().metadata(), "extensions": []}

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        model = self.get_model_from_registry(model_name)
        if isinstance(model, PyfuncModel):
            return model.v2_metadata(model_name)
        return await super().model_metadata(model_name)


class PyfuncInferenceServicer(InferenceServicer):
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        self._check_version(request.name, request.version)
        md = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(
            name=md["name"],
            versions=md.get("versions") or [],
            platform=md["platform"],
            inputs=md["inputs"],
            outputs=md["outputs"],
        )

    def __init__(self, data_plane: DataPlane, repository_extension: Any, max_bytes: int) -> None:
        super().__init__(data_plane, repository_extension)
        self._max_bytes = max_bytes

    def _check_version(self, name: str, version: str) -> None:
        """NOT_FOUND (kserve's interceptor maps ModelNotFound) for a version this server does not serve."""
        check_version(self._data_plane.get_model_from_registry(name), name, version)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self._check_version(request.model_name, request.model_version)
        used = 0
        try:
            for inp in request.inputs:
                _, size = check_tensor(inp.name, inp.datatype, list(inp.shape), self._max_bytes, used)
                used += size
        except RequestTooLarge as exc:
            raise ResourceExhausted(str(exc)) from None
        except SignatureError as exc:
            raise InvalidInput(str(exc)) from None
        return await super().ModelInfer(request, context)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        self._check_version(request.name, request.version)
        return await super().ModelReady(request, context)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROL_REFUSED)

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, CONTROL_REFUSED)


# --------------------------------------------------------------------------------------------
# Transports bound to --host
# --------------------------------------------------------------------------------------------
async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    log.warning("bad request: %s", exc)
    return ORJSONResponse(status_code=400, content={"error": str(exc)})


async def _model_not_found(_: Request, exc: Exception) -> JSONResponse:
    return ORJSONResponse(status_code=404, content={"error": str(exc)})


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # the handler registered for it (Starlette passes Exception)
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    message = "malformed request: " + "; ".join(problems)
    log.warning("bad request: %s", message)
    return ORJSONResponse(status_code=400, content={"error": message})


class _RESTServer(RESTServer):
    def __init__(self, app: FastAPI, *, settings: ServingSettings, authenticator: Authenticator | None,
                 **kwargs: Any) -> None:
        asgi: Any = MaxBodySizeMiddleware(app, settings.max_request_bytes)
        if authenticator is not None:  # requests without a key are refused before the body is read
            asgi = ApiKeyMiddleware(asgi, authenticator)
        asgi = ControlRefusalMiddleware(asgi)  # outermost: model control is refused whatever the key
        super().__init__(asgi, **kwargs)
        self._app = app
        self._settings = settings
        self.config.host = settings.host
        if not settings.log_requests:
            # uvicorn's protocols log access lines whenever this logger has handlers.
            access = logging.getLogger("uvicorn.access")
            access.handlers = []
            access.propagate = False

    def create_application(self) -> None:
        app = self._app
        if self._settings.log_requests:
            self._add_middlewares(app)
        V2Routes(self.dataplane, self._settings.max_request_bytes).register(app)  # first: routes match in order
        self._register_endpoints(app)
        # kserve's load/unload routes: not on the public port at all (the middleware answers 403 first).
        app.router.routes[:] = [r for r in app.router.routes if not is_control_path(getattr(r, "path", ""))]
        self._add_exception_handlers(app)
        app.add_exception_handler(InvalidInput, _invalid_input)
        app.add_exception_handler(ModelNotFound, _model_not_found)
        app.add_exception_handler(EntityNotFoundError, _model_not_found)
        app.add_exception_handler(RequestValidationError, _request_validation)

    @property
    def started(self) -> bool:
        return bool(self._server.started)


class _GRPCServer:
    def __init__(self, data_plane: DataPlane, repository_extension: Any, settings: ServingSettings,
                 authenticator: Authenticator | None) -> None:
        self._data_plane = data_plane
        self._extension = repository_extension
        self._settings = settings
        self._authenticator = authenticator
        self._server: aio.Server | None = None

    @property
    def address(self) -> str:
        host = self._settings.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{self._settings.grpc_port}"

    async def start(self, max_workers: int) -> None:
        interceptors: list[Any] = [ExceptionToStatusInterceptor()]
        if self._settings.log_requests:
            interceptors.insert(0, LoggingInterceptor())
        if self._authenticator is not None:
            interceptors.insert(0, ApiKeyInterceptor(self._authenticator))
        interceptors.insert(0, ControlRefusalInterceptor())
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", self._settings.max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            PyfuncInferenceServicer(self._data_plane, self._extension, self._settings.max_request_bytes),
            self._server
        )
        self._server.add_insecure_port(self.address)
        await self._server.start()
        await self._server.wait_for_termination()

    async def stop(self, sig: int | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace=self._settings.grace_period)


class PyfuncModelServer(ModelServer):
    """A single-worker kserve ``ModelServer`` bound to ``settings.host``."""

    def __init__(self, settings: ServingSettings) -> None:
        super().__init__(
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            workers=1,
            max_threads=settings.grpc_threads,
            registered_models=SwappableModelRepository(),
            enable_grpc=True,
            enable_docs_url=False,
            enable_latency_logging=settings.log_requests,
            access_log_format=None,
            grace_period=settings.grace_period,
        )
        self.settings = settings
        self.dataplane = PyfuncDataPlane(model_registry=self.registered_models)
        self.authenticator: Authenticator | None = None
        if settings.auth_keys_file:
            limit = RateLimit(settings.auth_rps, settings.auth_burst)
            self.authenticator = Authenticator(AuthSettings(Path(settings.auth_keys_file), limit))

    def start(self, models: list[Any]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        s = self.settings
        app = FastAPI(
            title="mlplane model server",
            version=importlib_metadata.version("kserve"),
            docs_url=None,
            redoc_url=None,
            default_response_class=ORJSONResponse,
        )
        self._rest_server = _RESTServer(
            app,
            settings=s,
            authenticator=self.authenticator,
            data_plane=self.dataplane,
            model_repository_extension=self.model_repository_extension,
            http_port=s.http_port,
            workers=1,
            grace_period=s.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.servers.extend([self._rest_server.start(), self._announce(models)])
        if s.control_socket:
            try:
                control = bind_control_socket(Path(s.control_socket))
            except (ValueError, OSError) as exc:
                log.error("cannot listen for model control: %s", exc)
                raise SystemExit(2) from None
            self.servers.append(self._serve_control(control))
        if s.grpc:
            self._grpc_server = _GRPCServer(self.dataplane, self.model_repository_extension, s, self.authenticator)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())

    async def _serve_control(self, sock: socket.socket) -> None:
        """The control app on ``sock`` until the public HTTP server stops (it handles SIGTERM)."""
        config = uvicorn.Config(control_application(self.registered_models), log_config=None, lifespan="off",
                                timeout_graceful_shutdown=self.settings.grace_period)
        server = _ControlServer(config)

        async def stop_with_public() -> None:
            while not self._rest_server._server.should_exit:
                await asyncio.sleep(0.1)
            server.should_exit = True

        watcher = asyncio.create_task(stop_with_public())
        log.info("model control on unix socket %s", self.settings.control_socket)
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.settings.control_socket or "")

    async def _announce(self, models: list[Any]) -> None:
        while not self._rest_server.started:
            await asyncio.sleep(0.01)
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        for model in models:
            log.info(
                "mlplane model server: model %s version %s (%s) on http://%s:%d/v2/models/%s and grpc %s",
                model.name,
                model.version,
                model.model_uri,
                host,
                s.http_port,
                model.name,
                self._grpc_server.address if self._grpc_server else "off",
            )


def serve(settings: ServingSettings) -> None:
    """Load the model (blocking; readiness stays false until then) and serve until SIGTERM."""
    server = PyfuncModelServer(settings)  # configures kserve's logging
    kserve_logger, ours = logging.getLogger("kserve"), logging.getLogger("mlplane")
    if not ours.handlers:
        ours.handlers = list(kserve_logger.handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False
    version = settings.model_version or version_from_uri(settings.model_uri) or "1"
    features = None
    if settings.features and settings.feature_store_yaml:
        features = OnlineFeatures(parse_features(settings.features), settings.feature_store_yaml)
    model = PyfuncModel(settings.name, settings.model_uri, version, features)
    model.load()
    server.start([model])
