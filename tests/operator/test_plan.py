"""The operator's pure parts: spec parsing, pruning, conditions, Triton repository layout, settings."""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import pytest

from mlplane.core.signature import TensorMeta
from mlplane.k8s.render import ResolvedArtifact
from mlplane.spec import Platform, SpecError
from mlplane.triton.repository import TritonRepoError
from mlplane_operator import plan, platform_plan
from mlplane_operator.config import ConfigError, OperatorConfig
from mlplane_operator.plan import Condition
from mlplane_operator.triton import repository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))  # reuse the upstream-CRD validators
from k8s_schema_helpers import errors, upstream_validator

BODY = {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 3, "resourceVersion": "9",
                     "annotations": {"mlplane.io/last-handled-configuration": "{}"}, "finalizers": ["x"]},
        "spec": {"model": "models:/iris@champion"}}
COLUMNS = [TensorMeta(name=n, datatype="FP64", shape=[-1]) for n in ("a", "b")]
OUTPUT = [TensorMeta(name="output-0", datatype="INT64", shape=[-1])]


def test_parse_ignores_server_metadata_and_names_the_bad_field() -> None:
    assert plan.parse(BODY).metadata.namespace == "ml"
    with pytest.raises(SpecError) as err:
        plan.parse({**BODY, "spec": {"model": "models:/iris@champion", "replicas": -1, "runtim": "ray"}})
    text = str(err.value)
    assert "ml/iris: spec.replicas: got -1" in text and "spec.runtim: unknown field (did you mean 'runtime'?)" in text


def test_prune_picks_only_owned_children_that_are_no_longer_rendered() -> None:
    def obj(kind: str, name: str, uid: str) -> dict:
        return {"apiVersion": "v", "kind": kind, "metadata": {"name": name, "ownerReferences": [{"uid": uid}]}}

    desired = [obj("InferenceService", "iris", "u-1")]
    existing = [obj("InferenceService", "iris", "u-1"), obj("ScaledObject", "iris", "u-1"),
                obj("ScaledObject", "other", "u-2")]
    assert plan.to_prune(existing, desired, "u-1") == [existing[1]]


def test_conditions_keep_their_transition_time_while_the_status_holds() -> None:
    first = plan.conditions([], [Condition("Ready", "False", "Progressing", "waiting")], generation=1, now="t1")
    same = plan.conditions(first, [Condition("Ready", "False", "Progressing", "still")], generation=2, now="t2")
    flipped = plan.conditions(same, [Condition("Ready", "True", "Ready", "up")], generation=2, now="t3")
    assert (first[0]["lastTransitionTime"], same[0]["lastTransitionTime"], flipped[0]["lastTransitionTime"]) == (
        "t1", "t1", "t3")
    assert same[0]["observedGeneration"] == 2 and same[0]["message"] == "still"


def test_status_patch_is_empty_when_nothing_changed_and_removes_dropped_fields() -> None:
    assert plan.status_patch({"a": 1, "b": [1]}, {"a": 1, "b": [1]}) == {}
    assert plan.status_patch({"a": 1, "url": "x"}, {"a": 2}) == {"a": 2, "url": None}


def test_a_problem_is_new_only_when_it_changes() -> None:
    bad = [{"type": "Degraded", "status": "True", "reason": "RegistryUnavailable", "message": "m"}]
    assert plan.new_problem([], bad) == bad[0]
    assert plan.new_problem(bad, bad) is None
    assert plan.new_problem(bad, [{"type": "Degraded", "status": "False", "reason": "AsExpected"}]) is None


def test_triton_repository_is_content_addressed_under_the_version() -> None:
    deployment = plan.parse({**BODY, "spec": {"model": "models:/iris@champion", "runtime": "triton"}})
    repo = repository(deployment, "4", "s3://bucket/model", COLUMNS, OUTPUT)
    assert repo.artifact_path.startswith("triton-repository/4/") and len(repo.artifact_path.rsplit("/", 1)[1]) == 16
    assert sorted(repo.files) == ["iris/4/model.json", "iris/4/model.py", "iris/config.pbtxt"]
    assert repository(deployment, "4", "s3://bucket/model", COLUMNS, OUTPUT) == repo  # stable: written once
    batched = plan.parse({**BODY, "spec": {"model": "models:/iris@champion", "runtime": "triton",
                                           "batching": {"maxBatchSize": 8, "maxLatencyMs": 2}}})
    assert repository(batched, "4", "s3://bucket/model", COLUMNS, OUTPUT).artifact_path != repo.artifact_path
    with pytest.raises(TritonRepoError, match="no input signature"):
        repository(deployment, "4", "s3://bucket/model", [], OUTPUT)


def test_settings_come_from_the_environment_and_bad_values_are_named() -> None:
    config = OperatorConfig.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLPLANE_RESYNC_SECONDS": "15",
                                      "POD_NAMESPACE": "ops"})
    assert (config.tracking_uri, config.resync_seconds, config.namespace) == ("http://mlflow:5000", 15.0, "ops")
    with pytest.raises(ConfigError, match="MLPLANE_RESYNC_SECONDS: got 'soon'"):
        OperatorConfig.from_env({"MLPLANE_RESYNC_SECONDS": "soon"})
    # The platform is a Platform object, never settings: the GPU variables are gone.
    assert not hasattr(config, "platform") and not hasattr(config, "gpu_headroom")


def test_bad_platform_names_the_field_and_good_one_renders_a_feature_store_and_cron_jobs() -> None:
    body = {"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
            "metadata": {"name": "default", "namespace": "ml", "uid": "p-1", "generation": 2},
            "spec": {"gpuNodePool": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}}}
    with pytest.raises(SpecError, match=r"spec.gpuNodePool.tolerations\[0\].effect"):
        platform_plan.parse(body)
    body["spec"] = {"featureStore": {"enabled": True, "registry": "s3://b/registry.db",
                                     "onlineStore": {"type": "redis"}},
                    "vectorStore": {"enabled": True, "backend": "milvus", "uri": "http://milvus:19530",
                                    "collections": [{"name": "docs", "source": "/d", "schedule": "@daily"},
                                                    {"name": "once", "source": "/o"}]}}
    platform = platform_plan.parse(body)
    objects = platform_plan.children(platform, body, plan.owner_reference(body), "http://mlflow.mlplane:5000")
    assert [o["kind"] for o in objects] == ["Secret", "FeatureStore", "CronJob"]  # the store's settings first
    for obj in objects:
        assert obj["metadata"]["namespace"] == "ml" and obj["metadata"]["labels"]["mlplane.io/platform"] == "default"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "p-1"
    args = objects[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tracking-uri") + 1] == "http://mlflow.mlplane:5000"  # the operator's MLflow
    assert kubernetes_validate.validate(objects[2], "1.32", strict=True) == "1.32"


def test_a_platform_is_usable_once_reconciled_and_valid() -> None:
    meta = {"name": "default", "generation": 2}
    assert platform_plan.usable({"metadata": meta, "status": {"observedGeneration": 2}}) == (True, "")
    ok, why = platform_plan.usable({"metadata": meta, "status": {"observedGeneration": 1}})
    assert not ok and "not been reconciled" in why
    ok, why = platform_plan.usable({"metadata": meta, "status": {"observedGeneration": 2, "conditions": [
        {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "spec.x: bad"}]}})
    assert not ok and "spec.x: bad" in why


def test_children_are_owned_and_a_canary_is_a_valid_kserve_object() -> None:
    deployment = plan.parse({**BODY, "spec": {"model": "models:/iris@champion",
                                              "rollout": {"canaryTrafficPercent": 10}}})
    owner = plan.owner_reference(BODY)
    objects = plan.children(deployment, Platform.default(), ResolvedArtifact("2", "s3://b/2/model"), owner,
                            prometheus_url="http://prometheus:9090")
    assert all(o["metadata"]["ownerReferences"] == [owner] for o in objects)
    isvc = plan.main_child(objects)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert errors(upstream_validator("InferenceService", "v1beta1"), isvc) == []
    with pytest.raises(SpecError, match="KEDA"):
        plan.parse({**BODY, "spec": {"model": "models:/iris@champion", "rollout": {"canaryTrafficPercent": 10},
                                     "autoscaling": {"maxReplicas": 2}}})


def test_a_platform_change_reaches_the_deployments_that_use_it_once() -> None:
    body = {"metadata": {"name": "default", "namespace": "mlplane", "uid": "p-1", "generation": 3},
            "status": {"observedGeneration": 2}}
    assert platform_plan.revision(body, "MODIFIED") is None  # being reconciled: its status write comes next
    body["status"]["observedGeneration"] = 3
    assert platform_plan.revision(body, "MODIFIED") == "p-1/3"
    assert platform_plan.revision(body, "DELETED") == "p-1/deleted"
    going = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert platform_plan.revision(going, "MODIFIED") == "p-1/3"  # still found until it is gone

    entry = platform_plan.deployment_entry({**BODY, "status": {"observedGeneration": 3}, "metadata": {
        **BODY["metadata"], "annotations": {platform_plan.REVISION_ANNOTATION: "p-1/2"}}})
    assert entry == ("ml", "iris", "p-1/2") and platform_plan.platform_name(BODY) == "default"
    first = platform_plan.deployment_entry({**BODY, "metadata": {**BODY["metadata"], "name": "new"}})
    assert first == ("ml", "new", platform_plan.NOT_YET)  # its first reconcile reads the Platform anyway
    deployments = [entry, first, ("ml", "seen", "p-1/3"), ("team", "own", None), ("mlplane", "ops", None)]
    # The operator's namespace's Platform: for every namespace without its own Platform of that name.
    assert platform_plan.to_notify("mlplane", "p-1/3", "mlplane", deployments, {"mlplane", "team"}) == [
        ("ml", "iris"), ("mlplane", "ops")]
    # A namespace's own Platform: for its namespace only.
    assert platform_plan.to_notify("team", "t-1/1", "mlplane", deployments, {"mlplane", "team"}) == [
        ("team", "own")]
