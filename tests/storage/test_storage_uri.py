"""Every storageUri the operator emits comes down with KServe's own storage code and serves the model.

`kserve_storage.Storage.download(storageUri, empty_dir)` is what KServe's storage initializer runs
before a predictor starts; the model is then loaded from that directory as the model server (MLflow
pyfunc) or Triton (its model repository) would. MLflow is real, the model is registered as users
register it, and the storageUri comes from the operator's own code path (`resolve_served` with the
operator's `ModelRegistry`, `write=True`); `mlplane render` (`write=False`) computes the same URI.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from conftest import Mlflow
from kserve_storage import Storage

from mlplane.k8s.resolve import resolve_served
from mlplane.registry import MlflowRegistry, UnfetchableArtifact
from mlplane.serving.triton_backend import model_location
from mlplane.spec import ModelDeployment, Platform, load_dict
from mlplane_operator.mlflow_registry import ModelRegistry
from mlplane_pipelines.iris import FEATURES

ROWS = pd.DataFrame([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], columns=FEATURES)


def deployment(name: str, runtime: str, model: str = "models:/iris@champion", **spec: object) -> ModelDeployment:
    dep = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                     "spec": {"model": model, "runtime": runtime, **spec}}, source="test", document=None)
    assert isinstance(dep, ModelDeployment)
    return dep


def predicts_iris(model_dir: Path) -> None:
    model = mlflow.pyfunc.load_model(str(model_dir))
    assert [int(c) for c in model.predict(ROWS)] == [0, 2]


def test_kserve_on_a_proxied_store_gets_an_archive_the_storage_initializer_unpacks(
        proxied_mlflow: Mlflow, tmp_path: Path) -> None:
    dep = deployment("iris", "kserve")
    render_view = resolve_served(dep, Platform.default(), MlflowRegistry(proxied_mlflow.url), write=False)
    applied = resolve_served(dep, Platform.default(), ModelRegistry(proxied_mlflow.url), write=True)
    uri = applied.artifact.storage_uri
    # The chart's default store: MLflow's artifact proxy over HTTP, never the mlflow-artifacts: scheme.
    assert uri.startswith(f"{proxied_mlflow.url}/api/2.0/mlflow-artifacts/artifacts/")
    assert uri.endswith("/mlplane-serving/1/model.tar.gz") and applied.artifact.registry_version == "1"
    assert render_view.artifact == applied.artifact  # render prints what the operator applies …
    assert render_view.note and "operator" in render_view.note  # … and says the operator writes the archive
    again = resolve_served(dep, Platform.default(), MlflowRegistry(proxied_mlflow.url), write=False)
    assert again.artifact == applied.artifact and again.note is None

    out = Storage.download(uri, str(tmp_path / "mnt-models"))
    assert (Path(out) / "MLmodel").is_file()
    predicts_iris(Path(out))


def test_triton_repository_comes_down_self_contained(proxied_mlflow: Mlflow, tmp_path: Path) -> None:
    dep = deployment("tri", "triton", batching={"maxBatchSize": 8, "maxLatencyMs": 2})
    registry = ModelRegistry(proxied_mlflow.url)
    uri = resolve_served(dep, Platform.default(), registry, write=True).artifact.storage_uri
    assert uri.startswith(f"{proxied_mlflow.url}/api/2.0/mlflow-artifacts/artifacts/")
    assert "/triton-repository/1/" in uri and uri.endswith("/repository.tar.gz")
    stored = sorted(proxied_mlflow.artifacts.rglob("triton-repository/1/*/repository.tar.gz"))
    assert len(stored) == 1
    written = stored[0].stat().st_mtime_ns
    assert resolve_served(dep, Platform.default(), registry, write=True).artifact.storage_uri == uri
    assert stored[0].stat().st_mtime_ns == written  # written once, found again

    out = Path(Storage.download(uri, str(tmp_path / "mnt-models")))
    assert (out / "tri" / "config.pbtxt").is_file()
    config = (out / "tri" / "config.pbtxt").read_text()
    assert 'name: "tri"' in config and "version_policy: { specific: { versions: [ 1 ] } }" in config
    version_dir = out / "tri" / "1"
    assert {p.name for p in version_dir.iterdir()} >= {"model.py", "model.json", "model"}
    meta = json.loads((version_dir / "model.json").read_text())
    assert meta == {"model_uri": "model", "version": "1"}
    # The backend loads what came down with the repository: no MLflow server, no credentials.
    predicts_iris(Path(model_location(str(version_dir), meta["model_uri"])))


def test_a_local_artifact_location_is_refused_with_what_to_do(proxied_mlflow: Mlflow) -> None:
    registry = MlflowRegistry(proxied_mlflow.url)
    with pytest.raises(UnfetchableArtifact, match=r"spec.model: .*file:///srv/models/iris.*cannot download"):
        resolve_served(deployment("local", "kserve", "file:///srv/models/iris"), Platform.default(), registry,
                       write=False)
    with pytest.raises(UnfetchableArtifact, match="runtime triton in the cluster serves registered models only"):
        resolve_served(deployment("plain", "triton", "s3://bucket/model"), Platform.default(), registry, write=False)
    # MLflow proxies the artifacts, but is reached through no address a model pod could download from.
    external = Platform.model_validate({"metadata": {"name": "p"},
                                        "spec": {"tracking": {"mode": "external", "uri": "file:///srv/mlruns"}}})
    with pytest.raises(UnfetchableArtifact, match=r"spec.tracking"):
        resolve_served(deployment("iris", "kserve"), external, registry, write=False)


def test_s3_store_serves_the_versions_location_and_triton_packs_its_repository(
        s3_mlflow: Mlflow, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(s3_mlflow.url)
    kserve = resolve_served(deployment("iris", "kserve"), Platform.default(), registry, write=True)
    assert kserve.archive is None and kserve.artifact.storage_uri.startswith("s3://mlplane-artifacts/mlflow/")
    triton = resolve_served(deployment("tri", "triton"), Platform.default(), registry, write=True)
    assert triton.artifact.storage_uri.startswith("s3://mlplane-artifacts/mlflow/")
    assert triton.artifact.storage_uri.endswith("/repository.tar.gz")

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # what the storage initializer's S3 client reads
    predicts_iris(Path(Storage.download(kserve.artifact.storage_uri, str(tmp_path / "kserve"))))
    repo = Path(Storage.download(triton.artifact.storage_uri, str(tmp_path / "triton")))
    assert (repo / "tri" / "config.pbtxt").is_file() and not list(repo.glob("*.tar.gz"))
    predicts_iris(repo / "tri" / "1" / "model")


def test_archive_is_a_plain_tar_gz(proxied_mlflow: Mlflow, tmp_path: Path) -> None:
    """No absolute paths, no links: what `tarfile`'s data filter (KServe's unpacking) accepts as is."""
    applied = resolve_served(deployment("iris", "kserve"), Platform.default(), ModelRegistry(proxied_mlflow.url),
                             write=True)
    stored = next(proxied_mlflow.artifacts.rglob("mlplane-serving/1/model.tar.gz"))
    with tarfile.open(stored) as tar:
        members = tar.getmembers()
    assert applied.archive is not None and members
    assert all(not m.name.startswith("/") and ".." not in m.name and (m.isfile() or m.isdir()) for m in members)
    assert "MLmodel" in {m.name for m in members}
