"""The Platform's FeatureStore, as the feast-operator CRD admits it (schema and its CEL rules)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from operator_apiserver import known_crds

from mlplane.features.config import FeatureStoreConfigError, feature_store_config
from mlplane.features.operator import feature_store, feature_store_status
from mlplane.spec import Platform

FEATURE_STORES = SimpleNamespace(group="feast.dev", version="v1", plural="featurestores")
SECRETS = SimpleNamespace(group="", version="v1", plural="secrets")


def platform(**feature_store_spec) -> Platform:
    return Platform.model_validate({"metadata": {"name": "prod"}, "spec": {"featureStore": {
        "enabled": True, "project": "shop", "registry": "s3://feast/registry.db",
        "onlineStore": {"type": "redis", "options": {"key_ttl_seconds": 3600},
                        "secrets": {"connection_string": {"name": "feast-redis", "key": "url"}}},
        **feature_store_spec}}})


def test_rendered_feature_store_passes_the_feast_operator_crd():
    schemas = known_crds()
    objects = feature_store(platform(), "ml")
    assert [o["kind"] for o in objects] == ["Secret", "FeatureStore"]
    settings, store = objects
    for obj, resource in ((settings, SECRETS), (store, FEATURE_STORES)):
        assert schemas.admit(resource, obj, None) == [], obj

    services = store["spec"]["services"]
    assert store["spec"]["feastProject"] == "shop"
    assert services["registry"] == {"local": {"persistence": {"file": {"path": "s3://feast/registry.db"}}}}
    assert services["onlineStore"]["persistence"]["store"] == {"type": "redis",
                                                               "secretRef": {"name": "prod-feast-online-store"}}
    # The credential reaches the feature server only from the user's Secret, as an env var Feast expands.
    assert services["onlineStore"]["server"]["env"] == [{
        "name": "MLPLANE_FEAST_ONLINE_CONNECTION_STRING",
        "valueFrom": {"secretKeyRef": {"name": "feast-redis", "key": "url"}}}]
    assert settings["stringData"] == {"redis": "connection_string: ${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}\n"
                                               "key_ttl_seconds: 3600\n"}
    # ... the very online store settings every predictor's feature_store.yaml has.
    pod_online = feature_store_config(platform(), target="cluster")["online_store"]
    assert {"type": "redis", **store_settings(settings)} == pod_online


def store_settings(secret: dict) -> dict:
    import yaml

    (text,) = secret["stringData"].values()
    return yaml.safe_load(text)


def test_a_warehouse_offline_store_gets_its_own_settings_secret():
    objects = feature_store(platform(offlineStore={"type": "bigquery", "options": {"dataset": "feast"}}), "ml")
    assert [o["metadata"]["name"] for o in objects] == ["prod-feast-online-store", "prod-feast-offline-store",
                                                        "prod"]
    assert objects[1]["stringData"] == {"bigquery": "dataset: feast\n"}
    assert known_crds().admit(FEATURE_STORES, objects[2], None) == []
    assert objects[2]["spec"]["services"]["offlineStore"]["persistence"]["store"]["type"] == "bigquery"


@pytest.mark.parametrize(("spec", "field"), [
    ({"registry": None}, "spec.featureStore.registry"),
    ({"registry": "feast/registry.db"}, "spec.featureStore.registry"),
    ({"onlineStore": {"type": "sqlite"}}, "spec.featureStore.onlineStore.type"),
])
def test_a_platform_the_cluster_cannot_run_names_the_field(spec, field):
    with pytest.raises(FeatureStoreConfigError, match=field.replace(".", r"\.")):
        feature_store(platform(**spec), "ml")


def test_disabled_feature_store_renders_nothing():
    assert feature_store(platform(enabled=False), "ml") == []


def test_readiness_follows_the_feast_operator_status():
    assert feature_store_status(None).reason == "FeatureStoreMissing"
    pending = {"status": {"phase": "Pending", "conditions": [
        {"type": "FeatureStore", "status": "False", "reason": "DeploymentNotAvailable", "message": "0/1 ready"}]}}
    state = feature_store_status(pending)
    assert (state.ready, state.reason, state.message) == (False, "DeploymentNotAvailable", "0/1 ready")
    ready = {"status": {"phase": "Ready", "clientConfigMap": "feast-prod-client",
                        "conditions": [{"type": "FeatureStore", "status": "True", "reason": "Ready"}],
                        "serviceHostnames": {"onlineStore": "feast-prod-online.ml.svc.cluster.local:80"}}}
    state = feature_store_status(ready)
    assert state.ready and state.online_url == "http://feast-prod-online.ml.svc.cluster.local:80"
    assert state.client_config_map == "feast-prod-client"
    # The status the Feast operator writes is valid under its own CRD.
    store = feature_store(platform(), "ml")[-1]
    ready["status"]["conditions"][0].update(message="", lastTransitionTime="2026-01-01T00:00:00Z")
    assert known_crds().admit(FEATURE_STORES, {**store, **ready}, None) == []
