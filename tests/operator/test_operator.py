"""The operator against kmock and a real MLflow: what a user of `kubectl` and the MLflow UI would see."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import helm_python
import pytest
import pytest_asyncio
import yaml
from mlflow.tracking import MlflowClient
from operator_harness import FEATURE_STORE, ISVC, MD, PLATFORM, Harness, wait_for

from mlplane import registry
from mlplane.k8s.resolve import PROXY_PATH, resolve_served
from mlplane.spec import parse_model_ref
from mlplane_operator import plan, platform_plan
from mlplane_operator.handlers import FINALIZER
from mlplane_operator.kube import ADMISSION_ONLY, FIELD_MANAGER, PERMISSIONS
from mlplane_operator.mlflow_registry import ModelRegistry

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO = Path(__file__).resolve().parents[2]
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "target": {"metric": "rps", "value": 5}}
KSERVE_CHILDREN = {"InferenceService", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor"}


def served_by(namespace: str, name: str) -> str:
    return f"mlplane.io/served-by/{namespace}/{name}"


async def version_tags(tracking_uri: str, model: str) -> dict[str, dict[str, str]]:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions = await asyncio.to_thread(client.search_model_versions, f"name='{model}'")
    return {str(mv.version): dict(mv.tags or {}) for mv in versions}


async def location(tracking_uri: str, ref: str) -> tuple[str, str]:
    return await asyncio.to_thread(registry.artifact_location, tracking_uri, parse_model_ref(ref))


async def served_uri(harness: Harness, name: str, spec: dict) -> str:
    """The storageUri `mlplane render` computes for `spec` on the default Platform (one resolution for both)."""
    deployment = plan.parse({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment",
                             "metadata": {"name": name, "namespace": harness.namespace}, "spec": spec})
    uri = harness.operator.config.tracking_uri
    platform = platform_plan.in_cluster(platform_plan.parse(harness.get(PLATFORM, "default")), uri)
    assert uri is not None
    resolution = await asyncio.to_thread(resolve_served, deployment, platform, ModelRegistry(uri), write=False)
    return resolution.artifact.storage_uri


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def cleanup(harness: Harness) -> AsyncIterator[None]:
    """Delete what a test created (through the operator's finalizer) so no timer outlives its test."""
    harness.created.clear()
    yield
    if harness.operator.running:
        await harness.delete_created()


async def test_create_applies_owned_children_and_reports_status(harness: Harness) -> None:
    await harness.create("iris-a", {"model": "models:/iris@champion", "autoscaling": AUTOSCALING})
    children = await wait_for(lambda: len(harness.children("iris-a")) == 4 and harness.children("iris-a"),
                              "the four children")
    assert set(children) == KSERVE_CHILDREN
    owner = harness.get(MD, "iris-a")
    assert owner is not None
    for child in children.values():
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "name": "iris-a",
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert child["metadata"]["managedFields"] == [{"manager": FIELD_MANAGER, "operation": "Apply"}]
    version, _ = await location(harness.mlflow.url, "models:/iris@champion")
    storage = await served_uri(harness, "iris-a", {"model": "models:/iris@champion", "autoscaling": AUTOSCALING})
    isvc = children["InferenceService"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == storage
    assert children["ScaledObject"]["spec"]["maxReplicaCount"] == 3
    # Children are written with server-side apply only: never a create that could race or conflict.
    writes = [r for r in harness.operator_requests() if r.resource.group not in ("mlplane.io", "")
              and r.method.value in ("POST", "PUT", "PATCH")]
    assert writes and all(r.method.value == "PATCH" and r.headers["Content-Type"].startswith(
        "application/apply-patch") and r.params["fieldManager"] == FIELD_MANAGER for r in writes)

    status = await wait_for(lambda: harness.status("iris-a").get("servedVersion") and harness.status("iris-a"),
                            "status.servedVersion")
    assert (status["servedVersion"], status["modelUri"], status["observedGeneration"]) == (version, storage, 1)
    assert [c["type"] for c in status["conditions"]] == ["Ready", "ModelResolved", "Progressing", "Degraded"]
    assert harness.condition("iris-a", "Ready")["reason"] == "Progressing"
    resolved_at = harness.condition("iris-a", "ModelResolved")["lastTransitionTime"]

    await harness.mark_ready("iris-a")  # KServe: the predictor is up
    ready = await wait_for(lambda: harness.condition("iris-a", "Ready").get("status") == "True"
                           and harness.condition("iris-a", "Ready"), "Ready=True")
    assert ready["message"] == f"InferenceService iris-a serves version {version}"
    assert harness.status("iris-a")["url"] == "http://iris-a.default.example.com"
    assert harness.condition("iris-a", "Progressing")["reason"] == "RolledOut"
    assert harness.condition("iris-a", "ModelResolved")["lastTransitionTime"] == resolved_at  # unchanged status


async def test_update_patches_children_and_prunes_what_is_no_longer_rendered(harness: Harness) -> None:
    await harness.create("iris-b", {"model": "models:/iris@champion", "autoscaling": AUTOSCALING})
    await wait_for(lambda: set(harness.children("iris-b")) == KSERVE_CHILDREN, "the kserve children")

    await harness.patch(MD, "iris-b", {"spec": {"autoscaling": None, "replicas": 2}})
    await wait_for(lambda: "ScaledObject" not in harness.children("iris-b"), "the ScaledObject to be pruned")
    predictor = harness.children("iris-b")["InferenceService"]["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    await wait_for(lambda: harness.status("iris-b").get("observedGeneration") == 2, "observedGeneration 2")

    await harness.patch(MD, "iris-b", {"spec": {"runtime": "ray"}})
    await wait_for(lambda: set(harness.children("iris-b")) == {"RayService"}, "only a RayService")
    await wait_for(lambda: harness.status("iris-b").get("url") == (
        "http://iris-b-serve-svc.default.svc.cluster.local:8000"), "the Ray Serve URL")


async def test_invalid_spec_is_reported_with_its_field_path_and_not_retried(harness: Harness) -> None:
    # The CRD (and so the API server) accepts it; only the operator knows triton needs a registered model.
    await harness.create("bad", {"model": "s3://bucket/iris/model", "runtime": "triton"})
    ready = await wait_for(lambda: harness.condition("bad", "Ready").get("reason") == "InvalidSpec"
                           and harness.condition("bad", "Ready"), "Ready=False InvalidSpec")
    assert ready["status"] == "False" and "spec.model: runtime triton in the cluster serves registered models" in (
        ready["message"])
    assert harness.status("bad")["observedGeneration"] == 1 and not harness.children("bad")

    def status_writes() -> int:
        return sum(1 for r in harness.api if r.method.value == "PATCH" and r.name == "bad"
                   and r.subresource == "status")

    writes = status_writes()
    await asyncio.sleep(3 * harness.operator.config.resync_seconds)  # several resync periods pass
    assert status_writes() == writes == 1, "an invalid spec is reported once, not retried"

    await harness.patch(MD, "bad", {"spec": {"runtime": "kserve"}})  # fixed: served from the next update
    await wait_for(lambda: "InferenceService" in harness.children("bad"), "the fixed spec to be served")
    await wait_for(lambda: harness.condition("bad", "Degraded").get("status") == "False", "Degraded=False")


async def test_a_spec_this_cluster_cannot_render_is_invalid_not_retried(harness: Harness) -> None:
    # Valid for the spec models, but the Platform it names (found in the operator's namespace) has no
    # feature store to join features from.
    await harness.create_platform("bare", {}, namespace=harness.operator.config.namespace)
    await harness.create("feat", {"model": "models:/iris@champion", "platform": "bare",
                                  "features": {"entityKey": "flower_id", "features": ["iris:sepal_length"]}})
    ready = await wait_for(lambda: harness.condition("feat", "Ready").get("reason") == "InvalidSpec"
                           and harness.condition("feat", "Ready"), "Ready=False InvalidSpec")
    assert "feature store" in ready["message"] and not harness.children("feat")


async def test_features_deployment_mounts_the_platforms_feature_store_config(harness: Harness) -> None:
    await harness.create("feat-ok", {"model": "models:/iris@champion",
                                     "features": {"entityKey": "flower_id", "features": ["iris:sepal_length"]}})
    children = await wait_for(lambda: {"ConfigMap", "InferenceService"} <= set(harness.children("feat-ok"))
                              and harness.children("feat-ok"), "the feature store ConfigMap (a core-group child)")
    config = yaml.safe_load(children["ConfigMap"]["data"]["feature_store.yaml"])
    assert config["project"] == "iris" and config["registry"]["path"] == "s3://mlplane/feast/registry.db"
    assert config["online_store"] == {"type": "redis", "ssl": False,
                                      "connection_string": "${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}"}
    model = children["InferenceService"]["spec"]["predictor"]["model"]
    env = {e["name"]: e for e in model["env"]}
    assert env["MLPLANE_FEAST_ONLINE_CONNECTION_STRING"]["valueFrom"] == {
        "secretKeyRef": {"name": "feast-redis", "key": "url"}}
    assert children["ConfigMap"]["metadata"]["ownerReferences"][0]["name"] == "feat-ok"
    await harness.patch(MD, "feat-ok", {"spec": {"features": None}})
    await wait_for(lambda: "ConfigMap" not in harness.children("feat-ok"), "the ConfigMap to be pruned")


async def test_unreachable_mlflow_keeps_the_children_and_says_why(harness: Harness) -> None:
    await harness.create("iris-c", {"model": "models:/iris@champion"})
    await wait_for(lambda: harness.status("iris-c").get("servedVersion") == "1", "version 1 served")
    before = harness.children("iris-c")
    harness.relay.cut()
    try:
        degraded = await wait_for(lambda: harness.condition("iris-c", "Degraded").get("reason") == (
            "RegistryUnavailable") and harness.condition("iris-c", "Degraded"), "Degraded=True RegistryUnavailable")
        assert degraded["status"] == "True"
        assert "did not answer" in degraded["message"] and "children keep serving version 1" in degraded["message"], (
            harness.status("iris-c"))
        assert harness.condition("iris-c", "ModelResolved")["status"] == "Unknown"
        assert harness.children("iris-c") == before  # untouched, not even re-applied
    finally:
        harness.relay.restore()
    await wait_for(lambda: harness.condition("iris-c", "Degraded").get("status") == "False", "recovery")


async def test_alias_move_rolls_out_the_new_version_as_a_canary_and_moves_the_mlflow_tag(harness: Harness) -> None:
    from mlplane_pipelines.iris import train_and_register

    url = harness.mlflow.url
    await asyncio.to_thread(train_and_register, url, name="iris-promo", alias="champion", experiment="promo")
    await harness.create("promo", {"model": "models:/iris-promo@champion", "rollout": {"canaryTrafficPercent": 20}})
    await wait_for(lambda: harness.status("promo").get("servedVersion") == "1", "version 1 served")
    isvc = harness.get(ISVC, "promo")
    assert isvc is not None and isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    tag = served_by("default", "promo")
    assert (await version_tags(url, "iris-promo"))["1"][tag] == "models:/iris-promo@champion"

    await asyncio.to_thread(train_and_register, url, name="iris-promo", C=0.5, alias="champion", experiment="promo")
    await wait_for(lambda: harness.status("promo").get("servedVersion") == "2", "the moved alias to be followed")
    storage = await served_uri(harness, "promo", {"model": "models:/iris-promo/2"})
    isvc = harness.get(ISVC, "promo")
    assert isvc is not None and isvc["spec"]["predictor"]["model"]["storageUri"] == storage
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20  # KServe splits 20/80 with version 1
    assert harness.status("promo")["modelUri"] == storage
    tags = await version_tags(url, "iris-promo")
    assert tags["2"][tag] == "models:/iris-promo@champion" and tag not in tags["1"]


async def test_restarted_operator_converges_without_duplicates(harness: Harness) -> None:
    await harness.create("iris-d", {"model": "models:/iris@champion"})
    await wait_for(lambda: harness.status("iris-d").get("servedVersion") == "1", "iris-d served")
    await harness.operator.stop()
    try:
        await harness.patch(MD, "iris-d", {"spec": {"autoscaling": AUTOSCALING}})  # while no operator runs
        await harness.create("iris-e", {"model": "models:/iris@champion"})
    finally:
        await harness.operator.start()
    await wait_for(lambda: set(harness.children("iris-d")) == KSERVE_CHILDREN, "iris-d's ScaledObject")
    await wait_for(lambda: harness.status("iris-d").get("observedGeneration") == 2, "iris-d generation 2")
    await wait_for(lambda: harness.status("iris-e").get("servedVersion") == "1", "iris-e served")
    for name in ("iris-d", "iris-e"):
        obj = harness.get(MD, name)
        assert obj is not None and obj["metadata"]["finalizers"] == [FINALIZER]
        for child in harness.children(name).values():
            assert len(child["metadata"]["ownerReferences"]) == 1
    assert not [r for r in harness.operator_requests() if r.method.value == "POST" and r.resource.group != ""]


async def test_delete_removes_the_children_and_the_served_by_tag(harness: Harness) -> None:
    await harness.create("iris-f", {"model": "models:/iris@champion"})
    await wait_for(lambda: harness.status("iris-f").get("servedVersion") == "1", "iris-f served")
    assert served_by("default", "iris-f") in (await version_tags(harness.mlflow.url, "iris"))["1"]
    await harness.delete("iris-f")
    await wait_for(lambda: harness.get(MD, "iris-f") is None, "the finalizer to let go")
    assert harness.children("iris-f") == {}
    assert served_by("default", "iris-f") not in (await version_tags(harness.mlflow.url, "iris"))["1"]


async def test_triton_repository_is_stored_next_to_the_model_version(harness: Harness) -> None:
    await harness.create("tri", {"model": "models:/iris@champion", "runtime": "triton"})
    await wait_for(lambda: harness.status("tri").get("servedVersion") == "1", "tri served")
    storage = harness.get(ISVC, "tri")["spec"]["predictor"]["model"]["storageUri"]  # type: ignore[index]
    assert storage == await served_uri(harness, "tri", {"model": "models:/iris@champion", "runtime": "triton"})
    assert "/triton-repository/1/" in storage and harness.status("tri")["modelUri"] == storage

    # Under the version's run only: other modules store repositories of their own models' version 1.
    run_root = harness.mlflow.artifacts / storage.split(PROXY_PATH, 1)[1].split("/triton-repository/")[0]

    def stored() -> list[Path]:
        return sorted(p for p in run_root.rglob("triton-repository/1/*/*") if p.is_file())

    files = stored()
    assert [p.name for p in files] == [storage.rsplit("/", 1)[1]]  # the archive storageUri names
    with tarfile.open(files[0]) as archive:
        config = archive.extractfile("tri/config.pbtxt").read().decode()  # type: ignore[union-attr]
    assert 'name: "tri"' in config and 'backend: "python"' in config and "TYPE_FP64" in config
    written = files[0].stat().st_mtime_ns
    await asyncio.sleep(3 * harness.operator.config.resync_seconds)  # resyncs find it and leave it alone
    assert stored() == files and files[0].stat().st_mtime_ns == written


async def test_rbac_grants_exactly_what_the_operator_uses(harness: Harness) -> None:
    # Exercise every call on its own: create, prune, fail permanently (an event), delete.
    await harness.create("rbac", {"model": "models:/iris@champion", "autoscaling": AUTOSCALING})
    await wait_for(lambda: set(harness.children("rbac")) == KSERVE_CHILDREN, "the kserve children")
    await harness.patch(MD, "rbac", {"spec": {"runtime": "ray", "autoscaling": None}})
    await wait_for(lambda: set(harness.children("rbac")) == {"RayService"}, "only a RayService")
    await harness.create("rbac-bad", {"model": "s3://bucket/iris/model", "runtime": "triton"})
    await wait_for(lambda: harness.condition("rbac-bad", "Ready").get("reason") == "InvalidSpec", "InvalidSpec")
    await harness.delete("rbac")
    await wait_for(lambda: harness.get(MD, "rbac") is None and not harness.children("rbac"), "rbac deleted")
    # Core-group children (a ConfigMap) and a Platform's children, applied and pruned.
    await harness.create("rbac-feat", {"model": "models:/iris@champion",
                                       "features": {"entityKey": "flower_id", "features": ["iris:sepal_length"]}})
    await wait_for(lambda: "ConfigMap" in harness.children("rbac-feat"), "the ConfigMap")
    await harness.patch(MD, "rbac-feat", {"spec": {"features": None}})
    await wait_for(lambda: "ConfigMap" not in harness.children("rbac-feat"), "the ConfigMap pruned")
    await harness.create_platform("rbac-p", {"featureStore": FEATURE_STORE, "vectorStore": {
        "enabled": True, "backend": "milvus", "uri": "http://127.0.0.1:9", "collections": [
            {"name": "docs", "source": "/corpus", "schedule": "@daily"}]}})
    await wait_for(lambda: set(harness.platform_children("rbac-p")) == {"FeatureStore", "CronJob"},
                   "the Platform's children")
    await harness.patch(PLATFORM, "rbac-p", {"spec": {"featureStore": None, "vectorStore": None}})
    await wait_for(lambda: not harness.platform_children("rbac-p"), "the Platform's children pruned")

    declared = {(group, resource, verb) for (group, resource), verbs in PERMISSIONS.items() for verb in verbs}
    await wait_for(lambda: declared - ADMISSION_ONLY <= harness.api.calls, "every declared call to be seen")
    assert harness.api.calls <= declared, f"undeclared calls: {harness.api.calls - declared}"

    with helm_python.Chart.load(str(REPO / "charts" / "mlplane")) as chart:
        manifests = chart.render({}, name="mlplane", namespace="mlplane", is_install=True)
    role = next(doc for path, text in manifests.items() if path.endswith(".yaml")
                for doc in yaml.safe_load_all(text) if doc and doc["kind"] == "ClusterRole")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == declared


async def test_a_missing_service_account_is_named_and_the_deployment_converges_once_it_exists(
        harness: Harness) -> None:
    # The Platform's model servers run as an account nobody created in this namespace yet: their pods
    # would never start, so nothing is applied and the condition says what to do.
    await harness.create_platform("team", {"serving": {"serviceAccountName": "team-reader"}})
    await wait_for(lambda: harness.platform_status("team").get("observedGeneration") == 1, "team reconciled")
    await harness.create("sa-wait", {"model": "models:/iris@champion", "platform": "team"})
    ready = await wait_for(lambda: harness.condition("sa-wait", "Ready").get("reason") == "ServiceAccountMissing"
                           and harness.condition("sa-wait", "Ready"), "Ready=False ServiceAccountMissing")
    assert ready["status"] == "False"
    assert ready["message"].startswith("spec.serving.serviceAccountName: service account 'team-reader' does not "
                                       "exist in namespace 'default'")
    assert "serving.namespaces" in ready["message"]
    assert harness.condition("sa-wait", "Degraded")["reason"] == "ServiceAccountMissing"
    assert harness.children("sa-wait") == {} and "servedVersion" not in harness.status("sa-wait")

    await harness.create_service_account("team-reader")  # e.g. the chart, once the namespace is in its list
    isvc = await wait_for(lambda: harness.get(ISVC, "sa-wait"), "the InferenceService once the account exists")
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "team-reader"
    await harness.mark_ready("sa-wait")
    await wait_for(lambda: harness.condition("sa-wait", "Ready").get("status") == "True", "Ready=True")
    assert harness.condition("sa-wait", "Degraded")["status"] == "False"
