"""One resolution of `spec.model` for the cluster: what `mlplane render` prints and the operator applies.

`resolve_served(deployment, platform, registry, write=...)` pins the reference to a registry version
and computes the `storageUri` KServe's storage initializer (`kserve_storage.Storage.download`) can
fetch; the operator (`write=True`) also stores the archive that URI names when it is missing, render
(`write=False`) only computes it and says whether it exists yet. I/O goes through the injected
`ServingRegistry`; the URI computation (`plan_served`, `fetchable_uri`) is pure.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlparse

from mlplane.k8s.render import ResolvedArtifact, effective_runtime
from mlplane.registry import ArtifactStoreError, UnfetchableArtifact
from mlplane.runtime.triton_repo import cluster_repository, version_dir
from mlplane.serving.signature import TensorMeta
from mlplane.spec import ModelDeployment, ModelRef
from mlplane.spec.platform import Platform

SERVING_ROOT = "mlplane-serving"
ARCHIVE = "model.tar.gz"
REPOSITORY_ARCHIVE = "repository.tar.gz"
PROXY_PATH = "/api/2.0/mlflow-artifacts/artifacts/"
DIRECT_SCHEMES = ("s3://", "gs://")
# Schemes KServe's storage initializer downloads for a user-given storage URI (kserve_storage.Storage.download).
FETCHABLE_SCHEMES = ("s3://", "gs://", "http://", "https://", "pvc://", "hf://", "oci://", "hdfs://", "webhdfs://")
WHAT_TO_DO = ("configure MLflow's artifact store as s3 or gcs, or proxy it (mlflow server --serve-artifacts, "
              "the chart's mlflow.artifactStore.type: pvc) and reach MLflow over http(s)")


class ServingRegistry(Protocol):
    """The registry calls resolution needs; `mlplane_operator.mlflow_registry.ModelRegistry` implements it."""

    tracking_uri: str

    def resolve(self, ref: ModelRef) -> tuple[str, str]:
        """(registry version, artifact location) that `ref` points at now."""
        ...

    def tensors(self, name: str, version: str) -> tuple[Sequence[TensorMeta], Sequence[TensorMeta]]:
        """The V2 inputs and outputs of the version's MLflow signature."""
        ...

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
    (`mlplane_operator.platform_plan.in_cluster`), so render writes the same tracking URI into Ray's config."""
    from mlplane.spec.platform import TrackingSpec

    if tracking_uri is None or platform.spec.tracking.mode == "external":
        return platform
    spec = platform.spec.model_copy(update={"tracking": TrackingSpec(mode="external", uri=tracking_uri)})
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


def plan_served(deployment: ModelDeployment, platform: Platform, version: str, location: str, base: str,
                run: tuple[str, str] | None,
                tensors: tuple[Sequence[TensorMeta], Sequence[TensorMeta]] | None) -> Resolution:
    """The storage URI (and archive) serving registry `version` stored at `location`. Pure.

    `run` is (run id, run artifact URI), needed when an archive is; `tensors` the signature, for Triton.
    """
    runtime = effective_runtime(deployment, platform)
    if runtime == "ray" or (runtime == "kserve" and location.startswith(DIRECT_SCHEMES)):
        if runtime != "ray":
            fetchable_uri(location, base)
        return Resolution(ResolvedArtifact(version, location))
    fetchable_uri(location, base)  # refuse what no archive can fix (file:, local paths) before writing one
    if run is None:
        raise ValueError("plan_served: an archive needs the version's run")
    run_id, run_uri = run
    if runtime == "triton":
        if tensors is None:
            raise ValueError("plan_served: runtime triton needs the signature")
        repo = cluster_repository(deployment.metadata.name, version, tensors[0], tensors[1], deployment.spec)
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
        if runtime != "ray":
            fetchable_uri(ref.uri, "")
        return Resolution(ResolvedArtifact("", ref.uri))
    if registry is None:
        raise ValueError(f"{deployment.spec.model} needs an MLflow registry")
    version, location = registry.resolve(ref)
    base = proxy_base(registry.tracking_uri, platform)
    if not needs_archive(deployment, platform, location):
        return plan_served(deployment, platform, version, location, base, None, None)
    assert ref.name is not None
    fetchable_uri(location, base)
    try:
        run = registry.run_artifacts(ref.name, version)
        tensors = registry.tensors(ref.name, version) if runtime == "triton" else None
        planned = plan_served(deployment, platform, version, location, base, run, tensors)
        assert planned.archive is not None
        exists = registry.has_artifact(run[0], planned.archive.path)
        if not exists and write:
            registry.write_archive(planned.archive)
            exists = True
    except ArtifactStoreError as exc:  # name the store's location, not only the registry's name for it
        raise ArtifactStoreError(f"{exc} [files at {location}]", exc.reason) from None
    return Resolution(planned.artifact, planned.archive, exists)
