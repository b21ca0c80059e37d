"""One resolution: `mlplane render` prints what the operator applies; artifact-store errors are conditions.

The operator runs against kmock and a real MLflow that proxies its artifacts (the chart's default
store); `mlplane render` runs as a user runs it, against the same MLflow, with the same spec.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from mlflow.tracking import MlflowClient
from operator_harness import Harness, wait_for
from typer.testing import CliRunner

from mlplane.cli.main import app
from mlplane.runtime.local.process import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

# What the API server adds (and the operator's owner reference): everything else must match exactly.
SERVER_FIELDS = {"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "ownerReferences"}
RAG = {"rag": {"embedder": {"model": "models:/iris@champion"}, "generator": {"type": "extractive"}},
       "retrieval": {"collection": "docs"}}
# A model of this module's own: whether its serving archives exist yet must not depend on other modules.
MODEL = "iris-parity"
SPECS: dict[str, dict[str, Any]] = {
    "md-kserve": {"model": f"models:/{MODEL}@champion", "runtime": "kserve",
                  "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "target": {"metric": "rps", "value": 5}}},
    "md-triton": {"model": f"models:/{MODEL}@champion", "runtime": "triton", "resources": {"gpus": 1},
                  "batching": {"maxBatchSize": 8, "maxLatencyMs": 2}},
    "md-ray": {"model": f"models:/{MODEL}@champion", "runtime": "ray", **RAG},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module", autouse=True)
async def parity_model(harness: Harness) -> None:
    from mlplane_pipelines.iris import train_and_register

    await asyncio.to_thread(train_and_register, harness.mlflow.url, name=MODEL, alias="champion",
                            experiment="parity")


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def cleanup(harness: Harness) -> Any:
    harness.created.clear()
    yield
    await harness.delete_created()


def render(tmp: Path, name: str, spec: dict[str, Any], tracking_uri: str, *extra: str,
           platform: dict[str, Any] | None = None) -> tuple[int, str, str]:
    doc = {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    if platform is not None:
        platform_file = tmp / "platform.yaml"
        platform_file.write_text(yaml.safe_dump({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                                 "metadata": {"name": spec["platform"]}, "spec": platform}))
        extra = (*extra, "--platform", str(platform_file))
    result = CliRunner().invoke(app, ["render", "-f", str(path), "--tracking-uri", tracking_uri,
                                      "--state-dir", str(tmp / "state"), *extra])
    return result.exit_code, result.stdout, result.stderr


def applied_as_rendered(applied: dict[str, Any], rendered: dict[str, Any]) -> dict[str, Any]:
    """`applied` less what the API server and the owner reference add (checked to be only that)."""
    extra = set(applied["metadata"]) - set(rendered["metadata"])
    assert extra <= SERVER_FIELDS, extra
    out = {k: v for k, v in applied.items() if k in rendered}
    return {**out, "metadata": {k: v for k, v in applied["metadata"].items() if k in rendered["metadata"]}}


def last_applied(harness: Harness, rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The bodies the operator last sent (server-side apply) for the `rendered` objects, by kind; what the API
    server stores has its schema defaults added (e.g. `protocol: TCP`), so compare what was sent."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    out: dict[str, dict[str, Any]] = {}
    for request in harness.operator_requests():
        body = request.data
        if request.method == "PATCH" and request.subresource is None and isinstance(body, dict) \
                and (body.get("kind"), (body.get("metadata") or {}).get("name")) in wanted:
            out[body["kind"]] = copy.deepcopy(body)
    return out


# A Platform in the cluster, and the same document given to `mlplane render --platform`.
POOL = {"gpuNodePool": {"nodeSelector": {"pool": "gpu"}, "tolerations": [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}


@pytest.mark.parametrize("with_platform", [False, True], ids=["no-platform", "platform"])
@pytest.mark.parametrize("name", sorted(SPECS))
async def test_render_prints_exactly_what_the_operator_applies(harness: Harness, tmp_path: Path, name: str,
                                                               with_platform: bool) -> None:
    tracking = harness.operator.config.tracking_uri
    assert tracking is not None
    spec, platform = SPECS[name], None
    if with_platform:
        name, spec, platform = f"{name}-p", {**spec, "platform": "pool"}, POOL
        if harness.get("mlplane.io/v1alpha1/platforms", "pool") is None:
            await harness.create_platform("pool", POOL)
        await wait_for(lambda: (harness.platform_status("pool").get("observedGeneration") is not None), "pool")
    first = await asyncio.to_thread(render, tmp_path, name, spec, tracking, platform=platform)
    assert first[0] == 0, first[2]
    await harness.create(name, spec)
    await wait_for(lambda: harness.status(name).get("servedVersion") == "1", f"{name} served")
    code, out, err = await asyncio.to_thread(render, tmp_path, name, spec, tracking, platform=platform)
    assert code == 0, err
    rendered = list(yaml.safe_load_all(out))
    assert rendered == list(yaml.safe_load_all(first[1]))  # the same before and after the operator wrote archives
    assert sorted(harness.children(name)) == sorted(o["kind"] for o in rendered)
    applied = last_applied(harness, rendered)
    for obj in rendered:
        got = applied_as_rendered(applied[obj["kind"]], obj)
        assert got == obj, "\n".join(difflib.unified_diff(yaml.safe_dump(obj).splitlines(),
                                                         yaml.safe_dump(got).splitlines(), "render", "operator"))
    if with_platform and spec["runtime"] == "triton":  # the Platform's GPU pool reached both
        isvc = next(o for o in rendered if o["kind"] == "InferenceService")
        assert isvc["spec"]["predictor"]["nodeSelector"] == {"pool": "gpu"}
    if not name.startswith("md-ray"):
        storage = applied["InferenceService"]["spec"]["predictor"]["model"]["storageUri"]
        assert storage.startswith(f"{tracking}/api/2.0/mlflow-artifacts/artifacts/") and storage.endswith(".tar.gz")
        if not with_platform:  # the first render of a version: render said who writes the archive
            assert "does not exist yet" in first[2] and "operator" in first[2]


async def register_on_s3(harness: Harness, name: str) -> None:
    """A version whose files are in an S3 bucket (an experiment with an s3:// artifact root)."""
    client = MlflowClient(tracking_uri=harness.mlflow.url, registry_uri=harness.mlflow.url)

    def register() -> None:
        experiment = client.create_experiment(f"{name}-exp", artifact_location="s3://mlplane-test-bucket/mlflow")
        run = client.create_run(experiment)
        client.create_registered_model(name)
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(name, "champion", "1")

    await asyncio.to_thread(register)


async def test_artifact_store_errors_are_conditions_with_reasons(harness: Harness,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await register_on_s3(harness, "ons3")
    # No credentials anywhere (and no instance metadata to ask): the operator cannot read the bucket.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    await harness.create("s3-denied", {"model": "models:/ons3@champion", "runtime": "triton"})
    await wait_for(lambda: harness.condition("s3-denied", "ModelResolved").get("reason") == "ArtifactStoreAccessDenied",
                   "ArtifactStoreAccessDenied")
    message = harness.condition("s3-denied", "ModelResolved")["message"]
    assert "s3://mlplane-test-bucket/mlflow" in message and "identity" in message
    assert harness.condition("s3-denied", "Degraded")["reason"] == "ArtifactStoreAccessDenied"
    assert harness.children("s3-denied") == {}

    # Credentials, but the S3 endpoint refuses connections: the store is unavailable, retried.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port('127.0.0.1')}")
    await wait_for(lambda: harness.condition("s3-denied", "ModelResolved").get("reason") == "ArtifactStoreUnavailable",
                   "ArtifactStoreUnavailable")
    assert "did not answer" in harness.condition("s3-denied", "ModelResolved")["message"]
    assert harness.operator.running


async def test_a_spec_kserve_cannot_download_is_invalid(harness: Harness) -> None:
    await harness.create("local-files", {"model": "file:///srv/models/iris"})
    await wait_for(lambda: harness.condition("local-files", "Ready").get("reason") == "InvalidSpec", "InvalidSpec")
    message = harness.condition("local-files", "Ready")["message"]
    assert message.startswith("spec.model:") and "cannot download" in message and "s3" in message
    assert harness.children("local-files") == {}
