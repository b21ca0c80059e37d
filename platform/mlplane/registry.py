"""The MLflow model registry as mlplane uses it: resolve references, move aliases."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlplane.runtime.local.plan import ResolvedModel
from mlplane.runtime.local.runtimes import Signature
from mlplane.spec import ModelRef


class RegistryError(Exception):
    """The registry said no: unknown model, alias or version. The message says which."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer (refused, timed out, server error): worth retrying later."""


# MLflow error codes that mean "the registry answered: no such model, alias or version".
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def _failure(ref: ModelRef, exc: MlflowException) -> RegistryError:
    if exc.error_code in NOT_FOUND_CODES:
        return RegistryError(_describe(ref, exc))
    return RegistryUnavailable(f"{ref.uri}: the registry did not answer ({_short(exc)})")


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve(tracking_uri: str, ref: ModelRef) -> ResolvedModel:
    """Pin a reference to the registry version it points at now (storage URIs pass through)."""
    if ref.kind == "uri":
        return ResolvedModel(uri=ref.uri, version="")
    client = _client(tracking_uri)
    try:
        if ref.kind == "alias":
            mv = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            mv = client.get_model_version(ref.name, str(ref.version))
    except MlflowException as exc:
        raise _failure(ref, exc) from None
    return ResolvedModel(uri=f"models:/{ref.name}/{mv.version}", version=str(mv.version))


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    """Point ``name@alias`` at ``version``; the version must exist."""
    client = _client(tracking_uri)
    try:
        client.get_model_version(name, version)
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise RegistryError(f"cannot move models:/{name}@{alias} to version {version}: "
                            f"{_short(exc)}") from None


def signature(tracking_uri: str, uri: str) -> Signature:
    """The V2 tensors of a model's MLflow signature, read from its MLmodel file without loading it."""
    import mlflow
    from mlflow.models import get_model_info

    from mlplane.serving.signature import inputs_from_schema, outputs_from_schema

    mlflow.set_tracking_uri(tracking_uri)  # get_model_info resolves models:/ URIs through the globals
    mlflow.set_registry_uri(tracking_uri)
    try:
        sig = get_model_info(uri).signature
    except MlflowException as exc:
        raise RegistryError(f"cannot read the signature of {uri}: {_short(exc)}") from None
    if sig is None:
        return Signature([], [])
    return Signature(inputs_from_schema(sig.inputs), outputs_from_schema(sig.outputs))


def _describe(ref: ModelRef, exc: MlflowException) -> str:
    what = f"alias '{ref.alias}'" if ref.kind == "alias" else f"version {ref.version}"
    return f"{ref.uri}: registered model '{ref.name}' has no {what} ({_short(exc)})"


def _short(exc: MlflowException) -> str:
    return str(exc.message if hasattr(exc, "message") else exc).splitlines()[0][:300]


def artifact_location(tracking_uri: str, ref: ModelRef) -> tuple[str, str]:
    """``(registry version, artifact location)`` of what ``ref`` points at now; storage URIs pass through.

    The artifact location is where a cluster's model server downloads the files from (``s3://…`` with
    an S3 artifact store; ``mlflow-artifacts:/…`` when MLflow proxies the store).
    """
    if ref.kind == "uri":
        return "", ref.uri
    resolved = resolve(tracking_uri, ref)
    try:
        location = _client(tracking_uri).get_model_version_download_uri(ref.name, resolved.version)
    except MlflowException as exc:
        raise _failure(ref, exc) from None
    return resolved.version, location
