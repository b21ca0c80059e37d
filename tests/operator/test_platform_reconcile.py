"""Platforms in the cluster through the operator, against kmock and a real MLflow: what `kubectl get
platform -o yaml` shows, and the ModelDeployments (features, RAG) that use a Platform."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import kubernetes_validate
import pytest
import pytest_asyncio
import yaml
from operator_harness import FEATURE_STORE, ISVC, PLATFORM, Harness, wait_for

from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import milvus_lite_process
from mlplane.runtime.local.process import free_port, spawn, stop_tree
from mlplane_operator.kube import FIELD_MANAGER

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))  # reuse the upstream-CRD validators
from k8s_schema_helpers import REPO_ROOT, errors, upstream_validator, validator_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

FEAST_CRD = REPO_ROOT.parent / "shared" / "upstream-charts" / "feast-operator" / "config" / "crd" / "bases" / (
    "feast.dev_featurestores.yaml")
K8S_VERSION = "1.32"
FEATURES = {"entityKey": "flower_id", "features": ["iris:sepal_length"]}


def feast_validator():  # type: ignore[no-untyped-def]
    if not FEAST_CRD.is_file():
        pytest.fail(f"the feast-operator CRD is missing: looked for {FEAST_CRD} (../shared/upstream-charts/)")
    crd = yaml.load(FEAST_CRD.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return validator_for(version["schema"]["openAPIV3Schema"], check=False)


def milvus_spec(**extra: object) -> dict[str, object]:
    """A Milvus nobody listens on (a free loopback port): VectorStoreReachable=False, fast."""
    return {"enabled": True, "backend": "milvus", "uri": f"http://127.0.0.1:{free_port('127.0.0.1')}", **extra}


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def cleanup(harness: Harness) -> AsyncIterator[None]:
    harness.created.clear()
    yield
    await harness.delete_created()


async def test_platform_reports_each_dependency_and_owns_its_children(harness: Harness) -> None:
    await harness.create_platform("deps", {"featureStore": FEATURE_STORE, "vectorStore": milvus_spec(
        collections=[{"name": "docs", "source": "/corpus", "volumeClaim": "corpus", "schedule": "0 3 * * *"},
                     {"name": "adhoc", "source": "/adhoc"}])})
    await wait_for(lambda: harness.platform_status("deps").get("observedGeneration") == 1, "deps reconciled")
    conditions = {c["type"]: c for c in harness.platform_status("deps")["conditions"]}
    assert (conditions["TrackingReachable"]["status"], conditions["TrackingReachable"]["reason"]) == (
        "True", "Reachable")
    assert (conditions["FeatureStoreReady"]["status"], conditions["FeatureStoreReady"]["reason"]) == (
        "False", "FeatureStorePending")
    assert (conditions["VectorStoreReachable"]["status"], conditions["VectorStoreReachable"]["reason"]) == (
        "False", "Unreachable")
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "FeatureStorePending"

    children = harness.platform_children("deps")
    assert set(children) == {"FeatureStore", "CronJob"}  # only the scheduled collection gets a CronJob
    secret = harness.get("v1/secrets", "deps-feast-online-store")  # the store's settings, no credentials
    assert secret is not None and "${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}" in str(secret)
    owner = harness.get(PLATFORM, "deps")
    assert owner is not None
    for child in children.values():
        assert child["metadata"]["ownerReferences"] == [{
            "apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "name": "deps",
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert child["metadata"]["managedFields"][0]["manager"] == FIELD_MANAGER
    assert errors(feast_validator(), children["FeatureStore"]) == []
    cron = children["CronJob"]
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert kubernetes_validate.validate(cron, K8S_VERSION, strict=True) == K8S_VERSION

    # The feast-operator reports the store ready: so does the Platform's condition.
    await harness.patch(PLATFORM.replace("platforms", "featurestores").replace("mlplane.io/v1alpha1", "feast.dev/v1"),
                        children["FeatureStore"]["metadata"]["name"],
                        {"status": {"phase": "Ready", "conditions": [{
                            "type": "FeatureStore", "status": "True", "reason": "Ready", "message": "ready",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                                    "serviceHostnames": {"onlineStore": "feast-deps-online.default.svc:80"}}},
                        subresource="status")
    await wait_for(lambda: harness.platform_condition("deps", "FeatureStoreReady").get("status") == "True",
                   "FeatureStoreReady=True")
    assert harness.platform_condition("deps", "Ready")["reason"] == "Unreachable"  # Milvus still is not there

    harness.relay.cut()  # MLflow stops answering: the next resync says so
    try:
        unreachable = await wait_for(lambda: harness.platform_condition("deps", "TrackingReachable").get(
            "status") == "False" and harness.platform_condition("deps", "TrackingReachable"), "TrackingReachable")
        assert unreachable["reason"] == "Unreachable" and harness.relay.open is False
    finally:
        harness.relay.restore()
    await wait_for(lambda: harness.platform_condition("deps", "TrackingReachable").get("status") == "True",
                   "MLflow answering again")

    await harness.patch(PLATFORM, "deps", {"spec": {"vectorStore": {"collections": []}}})  # pruned
    await wait_for(lambda: set(harness.platform_children("deps")) == {"FeatureStore"}, "the CronJob pruned")


async def test_bad_platform_is_invalid_and_its_deployments_wait_for_it(harness: Harness) -> None:
    # The CRD accepts it; the cluster cannot ingest into milvus-lite (a local-only backend).
    await harness.create_platform("lite", {"vectorStore": {"enabled": True, "collections": [
        {"name": "docs", "source": "/corpus", "schedule": "@daily"}]}})
    ready = await wait_for(lambda: harness.platform_condition("lite", "Ready").get("reason") == "InvalidSpec"
                           and harness.platform_condition("lite", "Ready"), "Platform Ready=False InvalidSpec")
    assert ready["status"] == "False" and "spec.vectorStore" in ready["message"] and "milvus-lite" in ready["message"]
    assert harness.platform_status("lite")["observedGeneration"] == 1 and not harness.platform_children("lite")

    await harness.create("uses-lite", {"model": "models:/iris@champion", "platform": "lite"})
    waiting = await wait_for(lambda: harness.condition("uses-lite", "Ready").get("reason") == "PlatformNotReady"
                             and harness.condition("uses-lite", "Ready"), "Ready=False PlatformNotReady")
    assert "Platform lite is invalid" in waiting["message"] and not harness.children("uses-lite")

    await harness.patch(PLATFORM, "lite", {"spec": {"vectorStore": {"collections": []}}})  # fixed
    await wait_for(lambda: harness.status("uses-lite").get("servedVersion") == "1", "served once the Platform is")


async def test_a_missing_platform_is_named_and_picked_up_when_it_appears(harness: Harness) -> None:
    await harness.create("orphan", {"model": "models:/iris@champion", "platform": "later"})
    missing = await wait_for(lambda: harness.condition("orphan", "Ready").get("reason") == "PlatformNotFound"
                             and harness.condition("orphan", "Ready"), "Ready=False PlatformNotFound")
    assert "no Platform named 'later' in namespace default or mlplane" in missing["message"]
    assert not harness.children("orphan")
    await harness.create_platform("later", {"serving": {"maxRequestBytes": 4096}},
                                  namespace=harness.operator.config.namespace)  # the operator's namespace
    await wait_for(lambda: "InferenceService" in harness.children("orphan"), "the resync to find the Platform")


async def test_features_and_rag_deployments_get_the_platforms_services(harness: Harness) -> None:
    """End to end: a Platform, a features deployment and a RAG deployment, every child upstream-valid."""
    from mlplane_pipelines.iris import train_and_register

    await asyncio.to_thread(train_and_register, harness.mlflow.url, name="iris-e2e", alias="champion",
                            experiment="e2e")
    store = milvus_spec(tokenSecret={"name": "milvus-auth", "key": "token"})
    await harness.create_platform("e2e", {"featureStore": FEATURE_STORE, "vectorStore": store})
    await wait_for(lambda: harness.platform_status("e2e").get("observedGeneration") == 1, "e2e reconciled")
    await harness.create("e2e-feat", {"model": "models:/iris-e2e@champion", "platform": "e2e", "features": FEATURES})
    await harness.create("e2e-rag", {"model": "models:/iris-e2e@champion", "platform": "e2e", "runtime": "ray",
                                     "retrieval": {"collection": "docs"}, "rag": {}})
    await wait_for(lambda: harness.status("e2e-feat").get("servedVersion") == "1", "e2e-feat served")
    await wait_for(lambda: harness.status("e2e-rag").get("servedVersion") == "1", "e2e-rag served")

    feat = harness.children("e2e-feat")
    assert set(feat) == {"ConfigMap", "InferenceService", "PodDisruptionBudget", "ServiceMonitor"}
    assert errors(upstream_validator("InferenceService", "v1beta1"), feat["InferenceService"]) == []
    for kind in ("ConfigMap", "PodDisruptionBudget"):
        assert kubernetes_validate.validate(feat[kind], K8S_VERSION, strict=True) == K8S_VERSION
    config = yaml.safe_load(feat["ConfigMap"]["data"]["feature_store.yaml"])
    assert config["online_store"]["type"] == "redis" and config["project"] == FEATURE_STORE["project"]
    model = harness.get(ISVC, "e2e-feat")["spec"]["predictor"]["model"]  # type: ignore[index]
    env = {e["name"]: e for e in model["env"]}
    assert json.loads(env["MLPLANE_FEATURES"]["value"])["features"] == FEATURES["features"]
    assert env["MLPLANE_FEATURE_STORE_YAML"]["value"].endswith("/feature_store.yaml")
    assert [v["configMap"]["name"] for v in harness.get(ISVC, "e2e-feat")["spec"]["predictor"]["volumes"]] == [
        feat["ConfigMap"]["metadata"]["name"]]  # type: ignore[index]

    ray = harness.children("e2e-rag")["RayService"]
    assert errors(upstream_validator("RayService", "v1"), ray) == []
    args = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["tracking_uri"] == harness.operator.config.tracking_uri  # the Platform's (embedded: the operator's)
    assert args["vector_store_uri"] == store["uri"]
    cluster = ray["spec"]["rayClusterConfig"]
    containers = [c for g in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
                  for c in g["template"]["spec"]["containers"]]
    for container in containers:  # the token by reference only
        assert {"name": "MLPLANE_VECTOR_STORE_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "milvus-auth", "key": "token"}}} in container["env"]
    assert "milvus-auth" not in ray["spec"]["serveConfigV2"]


async def accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def test_vector_store_reachable_against_a_live_milvus(harness: Harness, tmp_path: Path) -> None:
    """A Milvus Lite server on loopback, started as the local runtime starts it: the Platform says it answers,
    and says it does not once it is stopped."""
    paths = StatePaths(tmp_path / "state")
    paths.milvus_dir.mkdir(parents=True)
    port = free_port("127.0.0.1")
    spec = milvus_lite_process(paths, "127.0.0.1", port)
    proc = spawn(spec)
    try:
        await wait_for(lambda: accepts_connections(port) if proc.poll() is None else True, "Milvus Lite to listen",
                       timeout=180)
        assert proc.poll() is None, spec.log.read_text()[-3000:]
        await harness.create_platform("live", {"vectorStore": {"enabled": True, "backend": "milvus",
                                                               "uri": f"http://127.0.0.1:{port}"}})
        reachable = await wait_for(lambda: harness.platform_condition("live", "VectorStoreReachable").get(
            "status") == "True" and harness.platform_condition("live", "VectorStoreReachable"),
            "VectorStoreReachable=True", timeout=120)
        assert reachable["reason"] == "Reachable" and "answers at 127.0.0.1" in reachable["message"]
        await wait_for(lambda: harness.platform_condition("live", "Ready").get("status") == "True", "Ready=True")

        stop_tree(proc.pid)
        down = await wait_for(lambda: harness.platform_condition("live", "VectorStoreReachable").get(
            "status") == "False" and harness.platform_condition("live", "VectorStoreReachable"),
            "VectorStoreReachable=False once Milvus is stopped", timeout=120)
        assert down["reason"] == "Unreachable" and f"127.0.0.1:{port}" in down["message"]
        ready = harness.platform_condition("live", "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Unreachable")
    finally:
        if proc.poll() is None:
            stop_tree(proc.pid)
