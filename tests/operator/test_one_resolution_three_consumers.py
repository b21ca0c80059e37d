"""One resolution of `spec.model` for the local supervisor, the operator and `mlplane render`.

The same deployment (no `runtime`: the Platform's `serving.defaultRuntime: triton` decides) and the same
MLflow state go to the local supervisor (its own resolve and prepare steps, writing the Triton model
repository under its state dir), to the operator (kmock, a real MLflow proxying artifacts) and to
`mlplane render`. All three serve the same version with the same runtime, render prints the storageUri the
operator applied, and the repository the operator stored with the version is the one the supervisor
wrote, file for file, but for where model.json says the model is (the local MLflow URI; the cluster's
`model` directory, shipped in the archive).
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from operator_harness import Harness, wait_for
from typer.testing import CliRunner

from mlplane.cli.main import app
from mlplane.runtime.local.components import write_prepared
from mlplane.runtime.local.local_plan import port_keys
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.supervisor import Supervisor
from mlplane.spec import ModelDeployment, Platform

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL = "iris-one-resolution"  # this module's own model: its archives must not depend on other modules
PLATFORM = "tri"
PLATFORM_SPEC: dict[str, Any] = {"serving": {"defaultRuntime": "triton"}}
NAME = "one-res"
SPEC: dict[str, Any] = {"model": f"models:/{MODEL}@champion", "platform": PLATFORM,
                        "batching": {"maxBatchSize": 8, "maxLatencyMs": 2}}


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def registered(harness: Harness) -> None:
    from mlplane_pipelines.iris import train_and_register

    await asyncio.to_thread(train_and_register, harness.mlflow.url, name=MODEL, alias="champion",
                            experiment="one-resolution")


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mlplane.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def render(tmp: Path, tracking_uri: str) -> list[dict[str, Any]]:
    (tmp / "dep.yaml").write_text(yaml.safe_dump(doc("ModelDeployment", NAME, SPEC)))
    (tmp / "platform.yaml").write_text(yaml.safe_dump(doc("Platform", PLATFORM, PLATFORM_SPEC)))
    result = CliRunner().invoke(app, ["render", "-f", str(tmp / "dep.yaml"), "--platform", str(tmp / "platform.yaml"),
                                      "--tracking-uri", tracking_uri, "--state-dir", str(tmp / "render-state")])
    assert result.exit_code == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def archive_files(storage_uri: str) -> dict[str, bytes]:
    """The files of the archive at `storage_uri` (what KServe's storage initializer unpacks into /mnt/models)."""
    r = httpx.get(storage_uri, timeout=60)
    r.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def test_supervisor_operator_and_render_serve_one_resolution(harness: Harness, tmp_path: Path) -> None:
    tracking = harness.operator.config.tracking_uri
    assert tracking is not None

    # The local supervisor, on the same Platform and MLflow: resolve, then write what Triton loads.
    platform = Platform.model_validate(doc("Platform", PLATFORM, PLATFORM_SPEC))
    deployment = ModelDeployment.model_validate(doc("ModelDeployment", NAME, SPEC))
    paths = StatePaths(tmp_path / "local")
    paths.ensure()
    manager = Supervisor(paths, platform).manager
    manager.state.tracking_uri = tracking
    local = await manager.resolve(deployment)
    ports = {key: 8000 + i for i, key in enumerate(port_keys(deployment, platform))}  # nothing is started here
    write_prepared(manager.plan(deployment, local, ports).prepared)
    models = paths.triton_dir(NAME) / "models"
    written = {p.relative_to(models).as_posix(): p.read_bytes() for p in models.rglob("*") if p.is_file()}
    assert sorted(written) == [f"{NAME}/1/model.json", f"{NAME}/1/model.py", f"{NAME}/config.pbtxt"]
    assert local.version == "1" and local.uri == f"models:/{MODEL}/1"
    assert local.triton is not None and local.signature is not None and local.signature.inputs

    # The operator, given the same Platform and deployment.
    await harness.create_platform(PLATFORM, PLATFORM_SPEC)
    await wait_for(lambda: harness.platform_status(PLATFORM).get("observedGeneration") is not None, PLATFORM)
    await harness.create(NAME, SPEC)
    try:
        await wait_for(lambda: harness.status(NAME).get("servedVersion") == local.version, f"{NAME} served")
        applied = harness.children(NAME)["InferenceService"]["spec"]["predictor"]
        storage_uri = applied["model"]["storageUri"]
        assert harness.status(NAME)["modelUri"] == storage_uri

        # render: the same object, the same storageUri.
        rendered = await asyncio.to_thread(render, tmp_path, tracking)
        isvc = next(o for o in rendered if o["kind"] == "InferenceService")
        assert isvc["spec"]["predictor"]["model"] == applied["model"]
        assert applied["model"]["modelFormat"]["name"] == "triton"  # the Platform's defaultRuntime, both sides

        # The repository the cluster serves is the supervisor's resolution's, stored under its digest.
        assert f"/{local.triton.cluster().artifact_path}/" in storage_uri
        stored = await asyncio.to_thread(archive_files, storage_uri)
        assert f"{NAME}/1/model/MLmodel" in stored  # the model's files travel with the repository
        generated = {path: stored[path] for path in written}
        for path in (f"{NAME}/config.pbtxt", f"{NAME}/1/model.py"):
            assert generated[path] == written[path], path
        local_meta = json.loads(written[f"{NAME}/1/model.json"])
        cluster_meta = json.loads(generated[f"{NAME}/1/model.json"])
        assert local_meta.pop("model_uri") == local.uri and cluster_meta.pop("model_uri") == "model"
        assert local_meta == cluster_meta == {"version": "1"}
    finally:
        await harness.delete(NAME)
        await wait_for(lambda: harness.get("mlplane.io/v1alpha1/modeldeployments", NAME) is None, f"{NAME} gone")
        await harness.delete_platform(PLATFORM)
