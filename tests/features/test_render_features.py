"""Cluster render of a deployment with `features:`: the predictor reads the configured online store,
validated against the upstream InferenceService CRD and the Kubernetes ConfigMap schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
from k8s_schema_helpers import errors, upstream_validator

from mlplane.k8s import ResolvedArtifact, render
from mlplane.spec import ModelDeployment, Platform, load_file

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ResolvedArtifact(registry_version="3", storage_uri="s3://mlflow/1/abc/artifacts/model")
PLATFORM = Platform.model_validate({"metadata": {"name": "prod"}, "spec": {"featureStore": {
    "enabled": True,
    "project": "shop",
    "registry": "s3://feast/registry.db",
    "onlineStore": {"type": "redis", "secrets": {"connection_string": {"name": "feast-redis", "key": "url"}}},
}}})


def _deployment(**spec) -> ModelDeployment:
    (dep,) = load_file(ROOT / "examples" / "features" / "deployment.yaml")
    return ModelDeployment.model_validate({**dep.to_dict(), "spec": {**dep.to_dict()["spec"], **spec}})


def test_features_deployment_renders_valid_objects_that_read_the_online_store():
    objects = render(_deployment(), PLATFORM, ARTIFACT)
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["ConfigMap", "InferenceService", "PodDisruptionBudget"]
    config_map, isvc = objects[0], objects[1]
    assert kubernetes_validate.validate(config_map, "1.32", strict=True) == "1.32"
    assert errors(upstream_validator("InferenceService", "v1beta1"), isvc) == []

    fs_yaml = yaml.safe_load(config_map["data"]["feature_store.yaml"])
    assert fs_yaml["project"] == "shop" and fs_yaml["registry"]["path"] == "s3://feast/registry.db"
    # The credential stays in its Secret: the ConfigMap holds a reference to an env var only.
    assert fs_yaml["online_store"] == {"type": "redis",
                                       "connection_string": "${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}"}

    model = isvc["spec"]["predictor"]["model"]
    env = {e["name"]: e for e in model["env"]}
    assert json.loads(env["MLPLANE_FEATURES"]["value"]) == {
        "entityKey": "flower_id", "onMissing": "error", "defaults": {},
        "features": [f"iris_measurements:{f}" for f in ("sepal_length", "sepal_width", "petal_length",
                                                         "petal_width")]}
    assert env["MLPLANE_FEAST_ONLINE_CONNECTION_STRING"]["valueFrom"] == {
        "secretKeyRef": {"name": "feast-redis", "key": "url"}}
    mount = model["volumeMounts"][0]
    assert env["MLPLANE_FEATURE_STORE_YAML"]["value"] == f"{mount['mountPath']}/feature_store.yaml"
    assert isvc["spec"]["predictor"]["volumes"] == [
        {"name": mount["name"], "configMap": {"name": config_map["metadata"]["name"]}}]


def test_the_model_server_reads_the_rendered_settings(monkeypatch):
    """The env the render sets is what `python -m mlplane.serving` takes as --features/--feature-store-yaml."""
    from mlplane.serving.settings import parse_args

    isvc = render(_deployment(), PLATFORM, ARTIFACT)[1]
    env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
    for name in ("MLPLANE_FEATURES", "MLPLANE_FEATURE_STORE_YAML"):
        monkeypatch.setenv(name, env[name])
    settings = parse_args(["--name", "iris-features", "--model-uri", "/mnt/models", "--http-port", "8080",
                           "--grpc-port", "8081"])
    assert settings.features == env["MLPLANE_FEATURES"]
    assert settings.feature_store_yaml == env["MLPLANE_FEATURE_STORE_YAML"]


@pytest.mark.parametrize(("platform", "message"), [
    ({}, "needs the platform's feature store"),
    ({"featureStore": {"enabled": True, "onlineStore": {"type": "redis"}}}, "spec.featureStore.registry"),
    ({"featureStore": {"enabled": True, "registry": "s3://f/r.db"}}, "'sqlite' is a local file"),
    ({"featureStore": {"enabled": True, "registry": "s3://f/r.db", "onlineStore": {"type": "redis"}},
      "serving": {"defaultRuntime": "triton"}}, "runtime 'kserve' only"),
])
def test_render_refuses_features_the_cluster_cannot_serve(platform, message):
    dep = _deployment()
    if "serving" in platform:  # runtime from the platform default, not the deployment
        data = dep.to_dict()
        del data["spec"]["runtime"]
        dep = ModelDeployment.model_validate(data)
    with pytest.raises(ValueError, match=message):
        render(dep, Platform.model_validate({"metadata": {"name": "p"}, "spec": platform}), ARTIFACT)


def test_deployments_without_features_render_as_before():
    plain = _deployment(features=None)
    assert [o["kind"] for o in render(plain, PLATFORM, ARTIFACT)][0] == "InferenceService"
    assert "env" not in render(plain, PLATFORM, ARTIFACT)[0]["spec"]["predictor"]["model"]
