"""One resolution of `spec.model`: what a deployment serves, for the local supervisor, the operator and render.

`resolve_model(deployment, platform, registry)` pins the reference to the registry version it points
at now and returns what every runtime serves from that version (:class:`ResolvedModel`):

- `uri`: what a server loads through MLflow, `models:/NAME/VERSION` (or the storage URI itself);
- `version`: the registry version ("" for a plain storage URI);
- `location`: the version's artifact location (MLflow's download URI: `s3://…`, `mlflow-artifacts:/…`);
- `signature`: the V2 tensors of the MLflow signature, read when the runtime needs them (triton);
- `triton`: for runtime triton, the model repository (:class:`mlplane.triton.repository.ModelRepository`:
  config.pbtxt and the model shim), the same files for both environments.

The runtime is the effective one (`mlplane.spec.effective.effective_runtime`: `spec.runtime`, else the
Platform's `serving.defaultRuntime`). What each environment adds on top stays with it: the local
runtime writes the repository under its state dir with model.json loading `uri`
(`mlplane.runtime.local.runtimes.TritonRuntime.prepare`); the cluster packs it with the model's files
and computes a `storageUri` KServe can download (`mlplane.k8s.resolve.resolve_served`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from mlplane.spec import ModelDeployment, ModelRef
from mlplane.spec.capabilities import runtimes_with
from mlplane.spec.effective import effective_runtime
from mlplane.spec.platform import Platform
from mlplane.triton.repository import ModelRepository, model_repository

if TYPE_CHECKING:  # annotations only: the CLI and the local planner import this module without numpy and pandas
    from mlplane.core.signature import TensorMeta

__all__ = ["NEEDS_SIGNATURE", "Registry", "ResolvedModel", "Signature", "resolve_model"]

# Runtimes whose server declares its tensors from the MLflow signature (Triton's config.pbtxt).
NEEDS_SIGNATURE: frozenset[str] = frozenset(runtimes_with("needs_signature"))


@dataclass(frozen=True)
class Signature:
    """The V2 tensors of a model's MLflow signature (empty lists: no signature)."""

    inputs: Sequence[TensorMeta]
    outputs: Sequence[TensorMeta]


class Registry(Protocol):
    """What resolution reads from the registry; `mlplane.registry.MlflowRegistry` implements it."""

    tracking_uri: str

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        """(registry version, artifact location) that `ref` points at now."""
        ...

    def signature(self, model_uri: str, location: str = "") -> Signature:
        """The V2 tensors of `model_uri`'s MLflow signature (empty lists: none); `location`, the version's
        artifact location, is for error messages."""
        ...


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference pinned to what it points at right now, and what serving it takes."""

    uri: str  # what a server loads through MLflow, e.g. models:/iris/3 (a plain storage URI as given)
    version: str  # "3", or "" for a plain storage URI
    location: str = ""  # the version's artifact location (the storage URI itself for a plain one)
    signature: Signature | None = None  # read for the runtimes in NEEDS_SIGNATURE
    triton: ModelRepository | None = None  # runtime triton: its model repository


def resolve_model(deployment: ModelDeployment, platform: Platform, registry: Registry | None, *,
                  check_location: Callable[[str], object] | None = None,
                  served: ResolvedModel | None = None) -> ResolvedModel:
    """Resolve `spec.model` into what is served (see the module docstring).

    `check_location(location)` is the environment's check of where the version's files are, called
    before anything else is read (the cluster refuses locations no model pod can download).
    `served` is what this deployment, with this spec, serves now: when the reference still points at
    it, it is returned as is, without reading the signature again (the local alias sync).

    Raises `mlplane.registry.RegistryError` (and subclasses) when the registry or its artifact store
    says no, `mlplane.triton.repository.TritonRepoError` (a `ValueError`) for a signature Triton
    cannot express, and `ValueError` for a registry reference without a registry.
    """
    runtime = effective_runtime(deployment, platform)
    ref = deployment.model_ref
    if ref.kind == "uri":
        version, location, uri = "", ref.uri, ref.uri
    else:
        if registry is None:
            raise ValueError(f"{deployment.spec.model} needs an MLflow registry")
        version, location = registry.resolve(ref)
        uri = f"models:/{ref.name}/{version}"
    if check_location is not None:
        check_location(location)
    if served is not None and (served.uri, served.version, served.location) == (uri, version, location):
        return served
    signature = None
    if runtime in NEEDS_SIGNATURE:
        if registry is None:
            raise ValueError(f"runtime {runtime} reads the signature of {uri} and needs an MLflow registry")
        signature = registry.signature(uri, location)
    triton = None
    if runtime == "triton":
        assert signature is not None
        triton = model_repository(deployment.metadata.name, version, signature.inputs, signature.outputs,
                                  deployment.spec, uri)
    return ResolvedModel(uri, version, location, signature, triton)
