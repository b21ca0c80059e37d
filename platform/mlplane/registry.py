"""The MLflow model registry as mlplane uses it: register models, pin references, read signatures, move aliases.

What a deployment serves is decided once, in :func:`mlplane.resolution.resolve_model`, which reads the
registry through :class:`MlflowRegistry`; this module knows MLflow, not runtimes.

Every write (:func:`register_model`, :func:`logged_run`) and every read that goes through MLflow's
process-wide tracking and registry URIs (fluent runs, ``models:/`` downloads and loads) runs inside
:func:`tracking`, which sets both URIs for the block and restores them after, one block at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import mlflow.artifacts
from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from mlplane.core.signature import inputs_from_schema, outputs_from_schema
from mlplane.resolution import Signature
from mlplane.spec import AliasRef, ModelRef, VersionRef

T = TypeVar("T")


@dataclass(frozen=True)
class Pinned:
    """A reference pinned to the registry version it points at now."""

    uri: str  # models:/NAME/VERSION, or the storage URI itself
    version: str  # "3", or "" for a plain storage URI


class RegistryError(Exception):
    """The registry said no: unknown model, alias or version. The message says which."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer (refused, timed out, server error): worth retrying later."""


class ArtifactStoreError(RegistryError):
    """The artifact store behind the registry failed (S3, GCS, MLflow's artifact proxy, the disk).

    ``reason`` is the status-condition reason: ``ArtifactStoreAccessDenied`` (credentials missing or
    refused: fix the identity, retrying alone will not help) or ``ArtifactStoreUnavailable``.
    """

    def __init__(self, message: str, reason: str = "ArtifactStoreUnavailable") -> None:
        super().__init__(message)
        self.reason = reason


class UnfetchableArtifact(RegistryError):
    """The model's files are where KServe's storage initializer cannot download them (e.g. ``file:``)."""


# MLflow's client reads these per request: a bounded time per call and no silent retries.
TIMEOUT_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
DEFAULT_TIMEOUT_S = 10.0


def bound_requests(timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Make MLflow calls give up after about ``timeout_s`` seconds each, without retries.

    MLflow's defaults (120 s per request, 7 retries with backoff) keep a caller waiting for minutes on an
    unreachable server. Sets the process environment (MLflow reads it on every request) unless ``env``.
    """
    if timeout_s <= 0:
        raise ValueError(f"the registry timeout must be positive seconds; got {timeout_s:g}")
    target = os.environ if env is None else env
    target["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    target["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


_DENIED_CODES = frozenset({"AccessDenied", "403", "401", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                           "ExpiredToken", "InvalidToken", "AllAccessDisabled", "AccountProblem"})


def storage_failure(what: str, exc: BaseException) -> RegistryError | None:
    """``exc`` from an artifact store client as a registry error naming ``what``; None if it is no such error.

    Covers botocore (S3), google-auth / google-cloud (GCS), requests (MLflow's artifact proxy) and OSError.
    """
    text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    denied = (f"{what}: the artifact store refused the credentials ({text}); give the operator (and the model "
              "servers) an identity that may read and write the bucket")
    unavailable = f"{what}: the artifact store did not answer ({text})"
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if module.startswith("botocore"):
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                    "NoAuthTokenError", "UnauthorizedSSOTokenError"):
            return ArtifactStoreError(denied, "ArtifactStoreAccessDenied")
        if name == "ClientError":
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in _DENIED_CODES:
                return ArtifactStoreError(denied, "ArtifactStoreAccessDenied")
        return ArtifactStoreError(unavailable)
    if module.startswith("google."):
        if name in ("DefaultCredentialsError", "RefreshError", "Forbidden", "Unauthorized", "PermissionDenied"):
            return ArtifactStoreError(denied, "ArtifactStoreAccessDenied")
        return ArtifactStoreError(unavailable)
    if module.startswith(("requests", "urllib3")):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return ArtifactStoreError(denied, "ArtifactStoreAccessDenied")
        return ArtifactStoreError(unavailable)
    if isinstance(exc, OSError):
        return ArtifactStoreError(unavailable)
    return None


# MLflow error codes that mean "the registry answered: no such model, alias or version".
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def _failure(ref: AliasRef | VersionRef, exc: MlflowException) -> RegistryError:
    if exc.error_code in NOT_FOUND_CODES:
        return RegistryError(_describe(ref, exc))
    return RegistryUnavailable(f"{ref.uri}: the registry did not answer ({_short(exc)})")


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# --------------------------------------------------------------------------- MLflow's process-wide URIs
_URIS_LOCK = threading.RLock()  # re-entrant: a tracking() block may call code that opens its own
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # MLflow mirrors its globals here for subprocesses


@contextlib.contextmanager
def tracking(uri: str | None) -> Iterator[None]:
    """Point MLflow's global tracking and registry URIs at ``uri`` for the block, then restore them.

    ``None`` leaves them as they are (MLflow's defaults, ``$MLFLOW_TRACKING_URI``) but still takes the lock.

    MLflow's fluent API (``mlflow.start_run``, ``log_model``) and its ``models:/`` resolution
    (``mlflow.artifacts.download_artifacts``, ``mlflow.pyfunc.load_model``, ``get_model_info``) read
    process-wide URIs, some ignoring a ``tracking_uri=`` argument for ``models:/``. Blocks run one at a time
    per process (a lock), so threads using different servers do not see each other's URIs.
    """
    with _URIS_LOCK:
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri, {k: os.environ.get(k) for k in _URI_ENV})
        try:
            if uri is not None:
                tracking_utils.set_tracking_uri(uri)
                registry_utils.set_registry_uri(uri)
            yield
        finally:
            tracking_utils.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None: back to the default
            registry_utils._registry_uri = saved[1]  # set_registry_uri(None) would leave the variable set
            for key, value in saved[2].items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def logged_run(tracking_uri: str, experiment: str, run_name: str | None = None, *,
               tags: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
               metrics: Mapping[str, float] | None = None) -> Iterator[Any]:
    """An MLflow run in ``experiment`` (created when missing) at ``tracking_uri``, with tags, params and metrics.

    Yields the active run (log more inside the block); MLflow's "view run" lines go to stderr so stdout
    stays for the caller's table or JSON.
    """
    with tracking(tracking_uri), contextlib.redirect_stdout(sys.stderr):
        experiment_id = _experiment_id(_client(tracking_uri), experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            if tags:
                mlflow.set_tags(dict(tags))
            if params:
                mlflow.log_params(dict(params))
            if metrics:
                mlflow.log_metrics(dict(metrics))
            yield run


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


@dataclass(frozen=True)
class Registration:
    """A model version :func:`register_model` created."""

    name: str
    version: str
    run_id: str


def register_model(tracking_uri: str, name: str, log_model: Callable[[str], Any], *, experiment: str,
                   run_name: str | None = None, params: Mapping[str, Any] | None = None,
                   metrics: Mapping[str, float] | None = None, alias: str | None = None) -> Registration:
    """Log a model in a new run of ``experiment``, register it as ``name`` and point ``alias`` (if any) at it.

    ``log_model(registered_model_name)`` logs the model in the active run with a flavor's ``log_model``
    (passing ``registered_model_name``) and returns its ``ModelInfo``. Params and metrics go on the run.
    """
    with logged_run(tracking_uri, experiment, run_name, params=params, metrics=metrics) as run:
        info = log_model(name)
    version = str(info.registered_model_version)
    if alias:
        _client(tracking_uri).set_registered_model_alias(name, alias, version)
    return Registration(name=name, version=version, run_id=run.info.run_id)


def resolve(tracking_uri: str, ref: ModelRef) -> Pinned:
    """Pin a reference to the registry version it points at now (storage URIs pass through)."""
    if ref.kind == "uri":
        return Pinned(uri=ref.uri, version="")
    client = _client(tracking_uri)
    try:
        if ref.kind == "alias":
            mv = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            mv = client.get_model_version(ref.name, str(ref.version))
    except MlflowException as exc:
        raise _failure(ref, exc) from None
    return Pinned(uri=f"models:/{ref.name}/{mv.version}", version=str(mv.version))


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
    try:
        with tracking(tracking_uri):  # get_model_info resolves models:/ URIs through the globals
            sig = get_model_info(uri).signature
    except MlflowException as exc:
        raise RegistryError(f"cannot read the signature of {uri}: {_short(exc)}") from None
    if sig is None:
        return Signature([], [])
    return Signature(inputs_from_schema(sig.inputs), outputs_from_schema(sig.outputs))


def _describe(ref: AliasRef | VersionRef, exc: MlflowException) -> str:
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


class MlflowRegistry:
    """The MLflow tracking server + registry at `tracking_uri`, as resolution reads it (`mlplane.resolution.
    Registry`: the local supervisor, `mlplane render`) and the cluster also writes archives to it
    (`mlplane.k8s.resolve.ServingRegistry`). Every failure is a `RegistryError`."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client = _client(tracking_uri)

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        return self._call(ref.uri, lambda: artifact_location(self.tracking_uri, ref))

    def signature(self, model_uri: str, location: str = "") -> Signature:
        """The V2 tensors of `model_uri`'s MLflow signature (models:/NAME/VERSION or a storage URI);
        `location` (the artifact store's name for the files) goes into artifact-store errors."""
        try:
            return self._call(model_uri, lambda: signature(self.tracking_uri, model_uri))
        except ArtifactStoreError as exc:
            if not location:
                raise
            raise ArtifactStoreError(f"{exc} [files at {location}]", exc.reason) from None

    def run_artifacts(self, name: str, version: str) -> tuple[str, str]:
        uri = f"models:/{name}/{version}"
        mv = self._call(uri, lambda: self._client.get_model_version(name, version))
        run_id = mv.run_id
        if not run_id:
            raise UnfetchableArtifact(
                f"spec.model: {uri} was registered without a run; in the cluster its files are packed and stored "
                "with the version's run for KServe to download: register the model from a run")
        run = self._call(f"run {run_id}", lambda: self._client.get_run(run_id))
        return run_id, run.info.artifact_uri

    def has_artifact(self, run_id: str, path: str) -> bool:
        parent = path.rsplit("/", 1)[0]
        listed = self._call(f"run {run_id}", lambda: self._client.list_artifacts(run_id, parent))
        return any(f.path == path and not f.is_dir for f in listed)

    def write_archive(self, archive: Any) -> None:
        """Download the model version's files, add the generated ones, tar.gz them and log the archive."""
        where = f"{archive.source} -> run {archive.run_id}/{archive.path}"
        with tempfile.TemporaryDirectory(prefix="mlplane-archive-") as tmp:
            content = Path(tmp, "content")
            model_dir = content / archive.model_dir if archive.model_dir else content
            model_dir.parent.mkdir(parents=True, exist_ok=True)
            with tracking(self.tracking_uri):  # a models:/ source resolves through the global registry URI
                downloaded = self._call(where, lambda: mlflow.artifacts.download_artifacts(
                    artifact_uri=archive.source, dst_path=str(Path(tmp, "download")),
                    tracking_uri=self.tracking_uri))
            Path(downloaded).rename(model_dir)  # the model's own directory (MLmodel at its top)
            for rel, text in archive.files:
                target = content / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            packed = Path(tmp, archive.path.rsplit("/", 1)[1])
            with tarfile.open(packed, "w:gz") as tar:
                for entry in sorted(content.rglob("*")):
                    tar.add(entry, arcname=str(entry.relative_to(content)), recursive=False)
            self._call(where, lambda: self._client.log_artifact(archive.run_id, str(packed),
                                                                archive.path.rsplit("/", 1)[0]))

    @staticmethod
    def _call(what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RegistryError:
            raise
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND_CODES:
                raise RegistryError(f"{what}: {_short(exc)}") from None
            raise RegistryUnavailable(f"{what}: the registry did not answer ({_short(exc)})") from None
        except Exception as exc:
            failure = storage_failure(what, exc)
            if failure is None:
                raise
            raise failure from None
