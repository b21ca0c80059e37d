"""A Platform change reaches its ModelDeployments at once, and each deployment resolves its model in its
Platform's MLflow: the operator against kmock and two real MLflow servers.

The resync timer is an hour away here, so within a test only the Platform's watch events can explain a
change in a deployment's children.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from mlflow.tracking import MlflowClient
from operator_harness import ISVC, MD, PLATFORM, Harness, Mlflow, running_mlflow, wait_for

from mlplane_operator import platform_plan

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def operator_settings() -> dict[str, float]:
    return {"resync_seconds": 3600.0}


@pytest.fixture(scope="module")
def other_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """A second MLflow (say, a team's own) where `iris@champion` is version 2, not 1 as in the chart's."""
    from mlplane_pipelines.iris import train_and_register

    with running_mlflow(tmp_path_factory.mktemp("other-mlflow")) as server:
        train_and_register(server.url, name="iris", experiment="other")
        train_and_register(server.url, name="iris", C=0.5, alias="champion", experiment="other")
        yield server


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def cleanup(harness: Harness) -> AsyncIterator[None]:
    harness.created.clear()
    yield
    await harness.delete_created()


async def champion(tracking_uri: str) -> str:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = await asyncio.to_thread(client.get_model_version_by_alias, "iris", "champion")
    return str(mv.version)


async def tags(tracking_uri: str, version: str) -> dict[str, str]:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return dict((await asyncio.to_thread(client.get_model_version, "iris", version)).tags or {})


def service_account(harness: Harness, name: str) -> str | None:
    isvc = harness.get(ISVC, name) or {}
    return ((isvc.get("spec") or {}).get("predictor") or {}).get("serviceAccountName")


async def test_a_platform_change_reaches_its_deployments_without_a_resync(harness: Harness) -> None:
    for account in ("reader-a", "reader-b"):
        await harness.create_service_account(account)
    await harness.create_platform("watched", {"serving": {"serviceAccountName": "reader-a"}})
    await harness.create("follows", {"model": "models:/iris@champion", "platform": "watched"})
    await wait_for(lambda: service_account(harness, "follows") == "reader-a", "the first account")
    await wait_for(lambda: harness.status("follows").get("observedGeneration") == 1, "follows reconciled")

    await harness.patch(PLATFORM, "watched", {"spec": {"serving": {"serviceAccountName": "reader-b"}}})
    await wait_for(lambda: service_account(harness, "follows") == "reader-b",
                   "the Platform's new account to reach the InferenceService")
    platform = harness.get(PLATFORM, "watched")
    deployment = harness.get(MD, "follows")
    assert platform is not None and deployment is not None
    assert deployment["metadata"]["annotations"][platform_plan.REVISION_ANNOTATION] == (
        f"{platform['metadata']['uid']}/2")
    assert deployment["metadata"]["generation"] == 1  # the deployment's spec is untouched

    # Gone: the deployment says so at once and keeps its children.
    await harness.delete_platform("watched")
    degraded = await wait_for(lambda: harness.condition("follows", "Degraded").get("reason") == "PlatformNotFound"
                              and harness.condition("follows", "Degraded"), "Degraded=True PlatformNotFound")
    assert "no Platform named 'watched'" in degraded["message"] and service_account(harness, "follows") == "reader-b"


async def test_a_deployment_resolves_its_model_in_its_platforms_mlflow(harness: Harness,
                                                                       other_mlflow: Mlflow) -> None:
    ours, theirs = await champion(harness.mlflow.url), await champion(other_mlflow.url)
    assert ours != theirs  # which MLflow answered shows in the served version
    await harness.create_platform("elsewhere", {"tracking": {"mode": "external", "uri": other_mlflow.url}})
    await wait_for(lambda: harness.platform_condition("elsewhere", "TrackingReachable").get("status") == "True",
                   "the other MLflow to be reachable")
    await harness.create("remote", {"model": "models:/iris@champion", "platform": "elsewhere"})
    status = await wait_for(lambda: harness.status("remote").get("servedVersion") and harness.status("remote"),
                            "remote served")
    assert status["servedVersion"] == theirs
    assert status["modelUri"].startswith(f"{other_mlflow.url}/api/2.0/mlflow-artifacts/artifacts/")
    tag = "mlplane.io/served-by/default/remote"
    assert (await tags(other_mlflow.url, theirs))[tag] == "models:/iris@champion"
    assert tag not in await tags(harness.mlflow.url, ours)

    # A Platform moving to another MLflow moves its deployments with it (the watch, not a resync).
    await harness.create_platform("moving", {})
    await harness.create("mover", {"model": "models:/iris@champion", "platform": "moving"})
    await wait_for(lambda: harness.status("mover").get("servedVersion") == ours, "mover served from the chart's MLflow")
    await harness.patch(PLATFORM, "moving", {"spec": {"tracking": {"mode": "external", "uri": other_mlflow.url}}})
    await wait_for(lambda: harness.status("mover").get("servedVersion") == theirs, "mover served from the other MLflow")
    assert harness.status("mover")["modelUri"].startswith(other_mlflow.url)

    await harness.delete("remote")  # its served-by tag goes from the MLflow it was served from
    await wait_for(lambda: harness.get(MD, "remote") is None, "remote deleted")
    assert tag not in await tags(other_mlflow.url, theirs)
