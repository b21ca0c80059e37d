"""One deployment on the local platform, planned: spec, Platform, resolved model and ports in, a
:class:`LocalPlan` out. Pure, the local counterpart of :func:`mlplane.k8s.render.render`.

The supervisor executes the plan (writes ``prepared``, runs ``process``, switches versions with
``load``); nothing here starts a process, opens a socket or reads the registry. The resolution
(:func:`mlplane.resolution.resolve_model`) happens before, the same one the cluster uses; the
runtime is the effective one (:func:`mlplane.spec.effective.effective_runtime`), a plugin of
:mod:`mlplane.runtime.local.runtimes` whose capabilities come from :mod:`mlplane.spec.capabilities`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplane.features.local import features_json
from mlplane.resolution import ResolvedModel
from mlplane.runtime.local.plan import RESERVED_NAMES, Endpoint, ProcessSpec, with_features
from mlplane.runtime.local.runtimes import (
    LoadRequest,
    LocalRuntime,
    Prepared,
    ServingContext,
    UnsupportedRuntime,
    runtime_of,
)
from mlplane.spec import ModelDeployment, Platform
from mlplane.spec.effective import effective_runtime
from mlplane.spec.rules import check_effective

__all__ = ["LocalPlan", "PlanError", "check_deployment", "plan_deployment", "port_keys"]


class PlanError(ValueError):
    """The deployment cannot run on this platform as specified (the user's to fix: CLI exit code 2)."""


@dataclass(frozen=True)
class LocalPlan:
    """Everything the supervisor needs to serve one deployment."""

    name: str
    runtime: str  # the effective runtime
    endpoint: Endpoint
    process: ProcessSpec  # the model server
    prepared: Prepared  # files the server needs before it starts or switches to this version
    load: LoadRequest  # switches a running server to this version in place
    workdir: Path | None  # where `prepared` goes; removed with the deployment

    @property
    def ports(self) -> dict[str, int]:
        """The ports it listens on, keyed as :func:`port_keys` names them."""
        ports = {f"{self.name}/http": self.endpoint.http_port}
        if self.endpoint.grpc_port:
            ports[f"{self.name}/grpc"] = self.endpoint.grpc_port
        if self.endpoint.metrics_port:
            ports[f"{self.name}/metrics"] = self.endpoint.metrics_port
        return ports

    def to_dict(self) -> dict[str, Any]:
        """The plan as data (golden files, debugging). The load request's header values (the control key, the
        supervisor's API key) appear by name only; Triton's command line carries its control key (tritonserver
        takes it no other way)."""
        return {
            "name": self.name,
            "runtime": self.runtime,
            "endpoint": {"url": self.endpoint.url, "grpc": self.endpoint.grpc, "metrics": self.endpoint.metrics},
            "process": {
                "kind": self.process.kind,
                "argv": list(self.process.argv),
                "env": dict(sorted(self.process.env.items())),
                "envFiles": [str(f) for f in self.process.env_files],
                "log": str(self.process.log),
                "readyUrl": self.process.ready_url,
                "readyTimeoutSeconds": self.process.ready_timeout_s,
            },
            "files": {str(dest): text for dest, text in sorted(self.prepared.files.items())},
            "copies": {str(dest): str(src) for dest, src in sorted(self.prepared.copies.items())},
            "load": {
                "path": self.load.path,
                "body": dict(self.load.body),
                "socket": str(self.load.socket) if self.load.socket else None,
                "headers": sorted(self.load.headers),
                "grpcMetadata": sorted(self.load.grpc_metadata) if self.load.grpc_metadata is not None else None,
            },
            "workdir": str(self.workdir) if self.workdir else None,
        }


def check_deployment(dep: ModelDeployment, platform: Platform) -> LocalRuntime:
    """The runtime that serves ``dep`` on ``platform``, or :class:`PlanError` for what no resolution can fix:
    a reserved name, a runtime the local platform lacks, a spec rule the effective runtime breaks."""
    name = dep.metadata.name
    if name in RESERVED_NAMES:
        raise PlanError(f"metadata.name: '{name}' is reserved; choose another name")
    try:
        runtime = runtime_of(dep, platform)  # spec.runtime, else the Platform's serving.defaultRuntime
    except UnsupportedRuntime as exc:
        raise PlanError(str(exc)) from None
    refused = check_effective(dep.spec, effective_runtime(dep, platform))  # as the cluster render checks them
    if refused:
        raise PlanError(f"deployment '{name}': spec: " + "; ".join(refused))
    return runtime


def port_keys(dep: ModelDeployment, platform: Platform) -> tuple[str, ...]:
    """The ports ``dep``'s server listens on, by key (``NAME/http``, ``NAME/grpc``, ``NAME/metrics``): the
    supervisor allocates them (and keeps them across restarts) before it plans."""
    name = dep.metadata.name
    caps = runtime_of(dep, platform).capabilities
    keys = [f"{name}/http"]
    if platform.spec.serving.grpc and caps.grpc:
        keys.append(f"{name}/grpc")
    if caps.metrics_port:
        keys.append(f"{name}/metrics")
    return tuple(keys)


def plan_deployment(dep: ModelDeployment, platform: Platform, resolved: ResolvedModel, ports: Mapping[str, int],
                    ctx: ServingContext) -> LocalPlan:
    """``dep`` serving ``resolved`` on ``platform``, on ``ports`` (keyed as :func:`port_keys` names them).

    ``ctx`` carries what only the running platform knows (its state dir, MLflow's URL, the vector store's,
    the model-control secret). :class:`PlanError` when the deployment cannot run here.
    """
    runtime = check_deployment(dep, platform)
    name = dep.metadata.name
    endpoint = Endpoint(platform.spec.serving.host, ports[f"{name}/http"], ports.get(f"{name}/grpc"),
                        ports.get(f"{name}/metrics"))
    try:
        prepared = runtime.prepare(ctx, dep, resolved)
    except ValueError as exc:  # a missing binary, a runtime the platform's settings rule out
        raise PlanError(f"deployment '{name}': {exc}") from None
    process = runtime.process(ctx, name, resolved, endpoint)
    if dep.spec.features is not None:
        process = with_features(process, features_json(dep), ctx.paths.feature_store_yaml)
    return LocalPlan(name=name, runtime=effective_runtime(dep, platform), endpoint=endpoint, process=process,
                     prepared=prepared, load=runtime.load_request(name, resolved, ctx),
                     workdir=runtime.workdir(ctx.paths, name))
