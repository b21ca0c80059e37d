"""Serving runtimes of the local platform, by name: a registry, not an if-chain.

The runtime is the effective one (:func:`runtime_of`: ``spec.runtime``, else the Platform's
``serving.defaultRuntime``, the cluster's rule too). A runtime says, without side effects, which files
the server needs on disk for a model resolved by :func:`mlplane.resolution.resolve_model`
(:meth:`LocalRuntime.prepare`; the supervisor writes them before a start and before a switch), how
to run the model server, and which V2 model-repository request switches a running server to
another version in place.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import site
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlplane.rag.serve_config import logical_cpus, serve_app_config
from mlplane.resolution import ResolvedModel, Signature
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import (
    TRITON_CONTROL_HEADER,
    Endpoint,
    ProcessSpec,
    TritonInstall,
    kserve_process,
    ray_app_file,
    ray_serve_process,
    triton_process,
)
from mlplane.spec import ModelDeployment
from mlplane.spec.capabilities import CAPABILITIES, RuntimeCapabilities
from mlplane.spec.effective import effective_runtime
from mlplane.spec.platform import AuthSpec, Platform
from mlplane.triton.repository import model_repository

__all__ = ["RUNTIMES", "KServeRuntime", "LoadRequest", "LocalRuntime", "Prepared", "RayRuntime", "ServingContext",
           "Signature", "TritonRuntime", "UnsupportedRuntime", "find_triton", "runtime_for", "runtime_of"]


@dataclass(frozen=True)
class ServingContext:
    """What every model server of a platform shares: the Platform, and what only the running supervisor knows."""

    paths: StatePaths
    tracking_uri: str
    platform: Platform
    vector_store_uri: str | None = None  # where the platform's Milvus answers (runtime 'ray')
    control_key: str = field(default="", repr=False)  # the supervisor's model-control secret (Triton)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)  # this host's CPUs (Ray's logical CPUs)

    @property
    def max_request_bytes(self) -> int:
        return self.platform.spec.serving.max_request_bytes

    @property
    def grace_period_s(self) -> int:
        return self.platform.spec.serving.grace_period_seconds

    @property
    def auth(self) -> AuthSpec:
        return self.platform.spec.auth

    @property
    def grpc(self) -> bool:
        return self.platform.spec.serving.grpc


@dataclass(frozen=True)
class LoadRequest:
    """``POST path`` with ``body`` (and ``headers``) makes the server serve another version: on its control
    socket when ``socket`` is set (kserve), else on its HTTP endpoint (Triton: with its control key).

    ``grpc_metadata`` set (Triton): when the server has a gRPC port, the switch goes there instead, as the
    V2 ``RepositoryModelLoad`` call with that metadata (:mod:`mlplane.runtime.local.triton_control`
    says why: an HTTP load stalls Triton's HTTP clients while the new version loads).
    """

    path: str
    body: Mapping[str, Any]
    socket: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    grpc_metadata: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Prepared:
    """Files the server needs before it starts or switches: text to write, files to copy."""

    files: Mapping[Path, str] = field(default_factory=dict)
    copies: Mapping[Path, Path] = field(default_factory=dict)  # destination -> source


class LocalRuntime(Protocol):
    #: what the runtime can do (features, batching, API keys, gRPC, a metrics port): the spec layer's table,
    #: which the rules and the cluster render read too
    capabilities: RuntimeCapabilities

    def prepare(self, ctx: ServingContext, dep: ModelDeployment, model: ResolvedModel,
                signature: Signature | None = None) -> Prepared:
        """The files for ``model``; ``signature`` stands in for ``model.signature`` when the model was only pinned."""
        ...

    def process(self, ctx: ServingContext, name: str, model: ResolvedModel, endpoint: Endpoint) -> ProcessSpec: ...

    def load_request(self, name: str, model: ResolvedModel, ctx: ServingContext | None = None) -> LoadRequest: ...

    def workdir(self, paths: StatePaths, name: str) -> Path | None:
        """Where :meth:`prepare` writes a deployment's files; removed when the deployment is."""
        ...


class KServeRuntime:
    """mlplane's KServe ModelServer (``python -m mlplane.serving``) with an MLflow pyfunc model."""

    capabilities = CAPABILITIES["kserve"]

    def prepare(self, ctx: ServingContext, dep: ModelDeployment, model: ResolvedModel,
                signature: Signature | None = None) -> Prepared:
        return Prepared()

    def process(self, ctx: ServingContext, name: str, model: ResolvedModel, endpoint: Endpoint) -> ProcessSpec:
        return kserve_process(ctx.paths, name, model, endpoint, ctx.tracking_uri, ctx.max_request_bytes,
                              ctx.grace_period_s, ctx.auth)

    def load_request(self, name: str, model: ResolvedModel, ctx: ServingContext | None = None) -> LoadRequest:
        return LoadRequest(f"/v2/repository/models/{name}/load",
                           {"parameters": {"model_uri": model.uri, "model_version": model.version}},
                           socket=ctx.paths.control_socket(name) if ctx is not None else None)

    def workdir(self, paths: StatePaths, name: str) -> Path | None:
        return None


class UnsupportedRuntime(ValueError):
    pass


def find_triton() -> TritonInstall:
    """The ``tritonserver`` of the ``nvidia-pytriton`` wheel, with the stub for this Python."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedRuntime("spec.runtime: 'triton' needs the tritonserver binary, which is not installed; "
                                 "install mlplane's 'triton' extra (pip install 'mlplane[triton]', or make venv)")
    package = Path(next(iter(spec.submodule_search_locations)))
    dist = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=dist / "bin" / "tritonserver",
        python_backend=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / version / "triton_python_backend_stub",
        library_path=(Path(sysconfig.get_config_var("LIBDIR")), package.parent / "nvidia_pytriton.libs"),
        site_packages=tuple(Path(p) for p in site.getsitepackages()),
    )
    for path in (install.binary, install.stub):
        if not path.exists():
            raise UnsupportedRuntime(f"spec.runtime: 'triton': {path} is missing (Python {version} needs a "
                                     "Python-backend stub); reinstall mlplane's 'triton' extra")
    return install


class TritonRuntime:
    """NVIDIA Triton Inference Server with its Python backend running the MLflow pyfunc.

    One ``tritonserver`` per deployment, in explicit model-control mode, on a model repository
    generated from the MLflow signature (:mod:`mlplane.triton.repository`). A switch writes the
    new version's directory, points ``version_policy`` at it and asks Triton to load the model:
    Triton loads the new version next to the old one and swaps when it is ready.
    """

    capabilities = CAPABILITIES["triton"]

    def __init__(self) -> None:
        self._install: TritonInstall | None = None

    @property
    def install(self) -> TritonInstall:
        if self._install is None:
            self._install = find_triton()
        return self._install

    def prepare(self, ctx: ServingContext, dep: ModelDeployment, model: ResolvedModel,
                signature: Signature | None = None) -> Prepared:
        """The resolution's model repository (``model.triton``, the cluster's too) under the state dir, its
        model.json loading ``model.uri`` through MLflow, and the Python backend Triton runs it with."""
        if ctx.auth.enabled and not self.capabilities.api_keys:
            raise UnsupportedRuntime("spec.runtime: 'triton' cannot check mlplane API keys (the platform's "
                                     "spec.auth.enabled is true); use runtime 'kserve' or turn auth off")
        if not ctx.grpc:  # Triton's HTTP inference API would be open: docs/triton-limits.md
            raise UnsupportedRuntime("spec.runtime: 'triton' serves inference over gRPC only, and the platform's "
                                     "spec.serving.grpc is false: with its HTTP inference API open to clients, "
                                     "one request can crash tritonserver 2.51 (docs/triton-limits.md); set "
                                     "spec.serving.grpc: true in the Platform or use runtime 'kserve'")
        name = dep.metadata.name
        repository = model.triton
        if repository is None:  # only pinned: the repository resolution would compute from the signature
            sig = signature or model.signature or Signature([], [])
            repository = model_repository(name, model.version, sig.inputs, sig.outputs, dep.spec, model.uri)
        base = ctx.paths.triton_dir(name)
        files = repository.files(model.uri)
        backend = base / "backends" / "python"
        install = self.install
        return Prepared(
            files={base / "models" / path: text for path, text in files.items()},
            copies={
                backend / "libtriton_python.so": install.python_backend / "libtriton_python.so",
                backend / "triton_python_backend_utils.py": install.python_backend / "triton_python_backend_utils.py",
                backend / "triton_python_backend_stub": install.stub,
            },
        )

    def process(self, ctx: ServingContext, name: str, model: ResolvedModel, endpoint: Endpoint) -> ProcessSpec:
        return triton_process(ctx.paths, name, endpoint, ctx.tracking_uri, ctx.grace_period_s, self.install,
                              ctx.control_key, ctx.max_request_bytes)

    def load_request(self, name: str, model: ResolvedModel, ctx: ServingContext | None = None) -> LoadRequest:
        headers = {TRITON_CONTROL_HEADER: ctx.control_key} if ctx is not None and ctx.control_key else {}
        # Over gRPC Triton expects restricted-protocol keys as "triton-grpc-protocol-<header>" metadata.
        metadata = {f"triton-grpc-protocol-{k}": v for k, v in headers.items()}
        return LoadRequest(f"/v2/repository/models/{name}/load", {}, headers=headers, grpc_metadata=metadata)

    def workdir(self, paths: StatePaths, name: str) -> Path | None:
        return paths.triton_dir(name)


class RayRuntime:
    """A RAG service on Ray Serve (``spec.rag``): a private Ray instance per deployment, HTTP only.

    ``prepare`` writes the Serve application (:func:`mlplane.rag.serve_config.serve_app_config`, the
    same one the cluster render puts in a RayService) with ``spec.model`` pinned to the resolved
    generator version. The server redeploys when that file changes, and Serve replaces the Generator
    replicas one by one; the load request waits on the ingress until the new version answers.
    """

    capabilities = CAPABILITIES["ray"]

    def prepare(self, ctx: ServingContext, dep: ModelDeployment, model: ResolvedModel,
                signature: Signature | None = None) -> Prepared:
        if dep.spec.rag is None:
            raise UnsupportedRuntime("spec.rag: runtime 'ray' serves a RAG application (embedder, retriever, "
                                     "generator); add spec.rag, e.g. as in examples/rag/deployment.yaml")
        if ctx.vector_store_uri is None:
            raise UnsupportedRuntime("runtime 'ray' needs the platform's vector store: set spec.vectorStore.enabled "
                                     "(or spec.vectorStore.uri) in the Platform")
        app = serve_app_config(dep, ctx.platform, tracking_uri=ctx.tracking_uri, vector_store_uri=ctx.vector_store_uri,
                               generator_uri=model.uri, generator_version=model.version,
                               keys_file=str(ctx.paths.auth_keys_file))
        # Logical CPUs: enough for every replica at its maximum; Ray packs them onto the real cores.
        config = {"app": app, "num_cpus": max(ctx.cpus, math.ceil(logical_cpus(app))),
                  "object_store_bytes": 256 * 1024 * 1024}
        return Prepared(files={ray_app_file(ctx.paths, dep.metadata.name): json.dumps(config, indent=2)})

    def process(self, ctx: ServingContext, name: str, model: ResolvedModel, endpoint: Endpoint) -> ProcessSpec:
        return ray_serve_process(ctx.paths, name, endpoint, ctx.tracking_uri)

    def load_request(self, name: str, model: ResolvedModel, ctx: ServingContext | None = None) -> LoadRequest:
        return LoadRequest("/v1/admin/generator/wait", {"version": model.version})

    def workdir(self, paths: StatePaths, name: str) -> Path | None:
        return ray_app_file(paths, name).parent


RUNTIMES: Mapping[str, LocalRuntime] = {"kserve": KServeRuntime(), "triton": TritonRuntime(), "ray": RayRuntime()}


def runtime_for(name: str) -> LocalRuntime:
    try:
        return RUNTIMES[name]
    except KeyError:
        available = ", ".join(f"'{n}'" for n in RUNTIMES)
        raise UnsupportedRuntime(f"spec.runtime: '{name}' is not available in the local runtime yet; "
                                 f"available: {available}") from None


def runtime_of(dep: ModelDeployment, platform: Platform) -> LocalRuntime:
    """The runtime serving ``dep`` on ``platform``: ``spec.runtime``, else the Platform's ``serving.defaultRuntime``
    (:func:`mlplane.spec.effective.effective_runtime`, as in the cluster)."""
    return runtime_for(effective_runtime(dep, platform))
