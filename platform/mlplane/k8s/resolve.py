"""`spec.model` in the cluster: what `mlplane render` prints and the operator applies.

`resolve_served(deployment, platform, registry, write=...)` takes the one resolution every runtime
uses (`mlplane.resolution.resolve_model`: registry version, artifact location, signature, Triton
repository; the local supervisor calls it too) and adds what the cluster needs on top: the
`storageUri` KServe's storage initializer (`kserve_storage.Storage.download`) can fetch. The operator
(`write=True`) also stores the archive that URI names when it is missing, render (`write=False`) only
computes it and says whether it exists yet. I/O goes through the injected `ServingRegistry`; the URI
computation (`plan_served`, `fetchable_uri`) is pure.

What KServe can download, and so what `storageUri` is, per artifact store (MLflow's artifact location
of the model version):

- `s3://`, `gs://` (MLflow `--default-artifact-root`): runtime kserve serves the version's location as
  is; runtime triton `…/triton-repository/<v>/<digest>/repository.tar.gz` under the version's run.
- proxied (`mlflow-artifacts:`, `--serve-artifacts`): the archive's artifact-proxy URL,
  `http://<mlflow>/api/2.0/mlflow-artifacts/artifacts/<run's artifacts>/mlplane-serving/<v>/model.tar.gz`
  for kserve, the repository archive's for triton.
- `file:`, a local path, anything else: refused (`UnfetchableArtifact`).

Archives are logged once with the model version's run (version-addressed, or content-addressed for
Triton's generated files) and never rewritten; KServe unpacks `.tar.gz` into `/mnt/models`. The proxied
store's MLflow PVC is namespaced and usually ReadWriteOnce, so model pods in other namespaces could not
mount it: the HTTP proxy is the one way in. `runtime: ray` loads the model through MLflow inside the
Serve application, so it gets the version's location as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlparse

from mlplane.k8s.render import ResolvedArtifact
from mlplane.registry import ArtifactStoreError, UnfetchableArtifact
from mlplane.resolution import Registry, ResolvedModel, resolve_model
from mlplane.spec import ModelDeployment
from mlplane.spec.effective import effective_runtime
from mlplane.spec.platform import Platform, TrackingSpec
from mlplane.triton.repository import version_dir

SERVING_ROOT = "mlplane-serving"
ARCHIVE = "model.tar.gz"
REPOSITORY_ARCHIVE = "repository.tar.gz"
PROXY_PATH = "/api/2.0/mlflow-artifacts/artifacts/"
DIRECT_SCHEMES = ("s3://", "gs://")
# Schemes KServe's storage initializer downloads for a user-given storage URI (kserve_storage.Storage.download).
FETCHABLE_SCHEMES = ("s3://", "gs://", "http://", "https://", "pvc://", "hf://", "oci://", "hdfs://", "webhdfs://")
WHAT_TO_DO = ("configure MLflow's artifact store as s3 or gcs, or proxy it (mlflow server --serve-artifacts, "
              "the chart's mlflow.artifactStore.type: pvc) and reach MLflow over http(s)")


class ServingRegistry(Registry, Protocol):
    """What resolution reads (`mlplane.resolution.Registry`) and the archives the cluster stores;
    `mlplane.registry.MlflowRegistry` (the operator's `ModelRegistry`) implements it."""

    def run_artifacts(self, name: str, version: str) -> tuple[str, str]:
        """(run id, the run's artifact URI) of the run the version was registered from."""
        ...

    def has_artifact(self, run_id: str, path: str) -> bool: ...

    def write_archive(self, archive: Archive) -> None:
        """Pack the model (and generated files) and log it as `archive.path` of `archive.run_id`."""
        ...


@dataclass(frozen=True)
class Archive:
    """An archive to log with a model version's run: the model's files under `model_dir`, plus `files`."""

    run_id: str
    path: str  # artifact path under the run, e.g. mlplane-serving/3/model.tar.gz
    source: str  # the model version's artifact location
    model_dir: str = ""  # "" puts the model at the archive's root (KServe's mlflow runtime)
    files: tuple[tuple[str, str], ...] = ()  # generated files: (relative path, text)
    kind: Literal["model", "triton"] = "model"


@dataclass(frozen=True)
class Resolution:
    """What `spec.model` serves, and the archive behind `storage_uri` (None when it is the location itself)."""

    artifact: ResolvedArtifact
    archive: Archive | None = None
    archive_exists: bool = True  # False: render computed the URI; the operator writes the archive

    @property
    def note(self) -> str | None:
        if self.archive is None or self.archive_exists:
            return None
        return (f"{self.artifact.storage_uri} does not exist yet: the operator packs and logs it with the model "
                f"version's run (run {self.archive.run_id}) on its first reconcile")


# --------------------------------------------------------------------------- pure
def in_cluster(platform: Platform, tracking_uri: str | None) -> Platform:
    """`platform` as the cluster's pods see it: an embedded tracking server is the MLflow at `tracking_uri`
    (the chart's, the operator's MLFLOW_TRACKING_URI); an external one stays. The operator's rule too
    (`mlplane_operator.platform_plan.in_cluster`), so render writes the same tracking URI into Ray's config.
    The pods' MLflow users (`spec.tracking.credentials`) stay either way."""
    tracking = platform.spec.tracking
    if tracking_uri is None or tracking.mode == "external":
        return platform
    resolved = TrackingSpec(mode="external", uri=tracking_uri, credentials=tracking.credentials)
    spec = platform.spec.model_copy(update={"tracking": resolved})
    return platform.model_copy(update={"spec": spec})


def proxy_base(tracking_uri: str, platform: Platform) -> str:
    """The MLflow address model pods download proxied artifacts from: the Platform's external tracking URI
    (the in-cluster address) when it names one, else the tracking URI resolution used."""
    tracking = platform.spec.tracking
    if tracking.mode == "external" and tracking.uri:
        return tracking.uri
    return tracking_uri


def fetchable_uri(location: str, base: str, field: str = "spec.model") -> str:
    """`location` (an MLflow artifact URI) as a URI KServe's storage initializer downloads.

    `mlflow-artifacts:` becomes the artifact proxy's HTTP URL under `base` (MLflow's own rule: the path
    goes under `/api/2.0/mlflow-artifacts/artifacts/`; a host in the URI wins). Raises
    `UnfetchableArtifact` for locations no model pod can read.
    """
    if location.startswith(FETCHABLE_SCHEMES):
        return location
    if location.startswith("mlflow-artifacts:"):
        parsed = urlparse(location)
        if parsed.netloc:
            root = f"http://{parsed.netloc}"
        elif base.startswith(("http://", "https://")):
            root = base.rstrip("/")
        else:
            raise UnfetchableArtifact(
                f"{field}: the model's files are at {location}, proxied by MLflow, but MLflow is reached at "
                f"{base!r}, which is no http(s) address a model pod could download from: set the Platform's "
                "spec.tracking (mode: external, uri: http://<mlflow service>.<namespace>.svc:<port>)")
        return f"{root}{PROXY_PATH}{parsed.path.lstrip('/')}"
    raise UnfetchableArtifact(
        f"{field}: the model's files are at {location}, which KServe's storage initializer in the cluster cannot "
        f"download (it reads {', '.join(s.removesuffix('://') for s in FETCHABLE_SCHEMES)}): {WHAT_TO_DO}")


def plan_served(deployment: ModelDeployment, platform: Platform, resolved: ResolvedModel, base: str,
                run: tuple[str, str] | None) -> Resolution:
    """The storage URI (and archive) serving `resolved` (`mlplane.resolution.resolve_model`'s result). Pure.

    `run` is (run id, run artifact URI), needed when an archive is. Runtime triton packs the resolution's
    model repository (`resolved.triton`), its model.json loading the model files packed next to it.
    """
    runtime = effective_runtime(deployment, platform)
    version, location = resolved.version, resolved.location
    if runtime == "ray" or (runtime == "kserve" and location.startswith(DIRECT_SCHEMES)):
        if runtime != "ray":
            fetchable_uri(location, base)
        return Resolution(ResolvedArtifact(version, location))
    fetchable_uri(location, base)  # refuse what no archive can fix (file:, local paths) before writing one
    if run is None:
        raise ValueError("plan_served: an archive needs the version's run")
    run_id, run_uri = run
    if runtime == "triton":
        if resolved.triton is None:
            raise ValueError("plan_served: runtime triton needs the resolution's model repository")
        repo = resolved.triton.cluster()
        archive = Archive(run_id, f"{repo.artifact_path}/{REPOSITORY_ARCHIVE}", location, repo.model_dir,
                          tuple(sorted(repo.files.items())), "triton")
    else:
        archive = Archive(run_id, f"{SERVING_ROOT}/{version_dir(version)}/{ARCHIVE}", location)
    storage_uri = fetchable_uri(f"{run_uri.rstrip('/')}/{archive.path}", base)
    return Resolution(ResolvedArtifact(version, storage_uri), archive)


def needs_archive(deployment: ModelDeployment, platform: Platform, location: str) -> bool:
    runtime = effective_runtime(deployment, platform)
    return runtime == "triton" or (runtime == "kserve" and not location.startswith(DIRECT_SCHEMES))


# --------------------------------------------------------------------------- with I/O
def resolve_served(deployment: ModelDeployment, platform: Platform, registry: ServingRegistry | None, *,
                   write: bool) -> Resolution:
    """Resolve `spec.model` into what the cluster serves; with `write`, store a missing archive.

    Raises `mlplane.registry.RegistryError` (and subclasses: unavailable, artifact store, unfetchable),
    `TritonRepoError` for signatures Triton cannot serve, and `UnfetchableArtifact` for specs no
    registry state can serve (e.g. runtime triton for a plain storage URI).
    """
    ref = deployment.model_ref
    runtime = effective_runtime(deployment, platform)
    if ref.kind == "uri":
        if runtime == "triton":
            raise UnfetchableArtifact(
                f"spec.model: runtime triton in the cluster serves registered models only (its model repository is "
                f"stored with the model version); got {deployment.spec.model!r}: use models:/NAME@ALIAS or "
                "models:/NAME/VERSION")
        # The one resolution (the local supervisor's too); a location no model pod can read is refused.
        plain = resolve_model(deployment, platform, registry,
                              check_location=None if runtime == "ray" else lambda loc: fetchable_uri(loc, ""))
        return Resolution(ResolvedArtifact(plain.version, plain.location))
    if registry is None:
        raise ValueError(f"{deployment.spec.model} needs an MLflow registry")
    base = proxy_base(registry.tracking_uri, platform)
    resolved = resolve_model(deployment, platform, registry,
                             check_location=None if runtime == "ray" else lambda loc: fetchable_uri(loc, base))
    if not needs_archive(deployment, platform, resolved.location):
        return plan_served(deployment, platform, resolved, base, None)
    try:
        run = registry.run_artifacts(ref.name, resolved.version)
        planned = plan_served(deployment, platform, resolved, base, run)
        assert planned.archive is not None
        exists = registry.has_artifact(run[0], planned.archive.path)
        if not exists and write:
            registry.write_archive(planned.archive)
            exists = True
    except ArtifactStoreError as exc:  # name the store's location, not only the registry's name for it
        raise ArtifactStoreError(f"{exc} [files at {resolved.location}]", exc.reason) from None
    return Resolution(planned.artifact, planned.archive, exists)
