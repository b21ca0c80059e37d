"""The Platform's feature store in the cluster, provisioned by Feast's upstream operator. Pure: no I/O.

:func:`feature_store` renders the feast-operator ``FeatureStore`` (``feast.dev/v1``) from the
Platform's ``spec.featureStore``; the Feast operator then runs the online feature server (and the
offline server where a store needs one). Nothing of Feast is re-templated here.

The stores are the ones the model servers use: the settings come from the same cluster
``feature_store.yaml`` (:func:`mlplane.features.config.feature_store_config`) that predictors mount,
so the FeatureStore and every predictor read the same registry and online store. The feast-operator
takes a store's settings from a Secret (the ``feature_store.yaml`` block under the store type's key);
mlplane renders that Secret with the non-secret settings and ``${MLPLANE_FEAST_...}`` placeholders
only. The credentials stay in the Secrets the user names in ``spec.featureStore.*.secrets``: the
feature server's container gets them as env vars (``secretKeyRef``) and Feast expands the
placeholders when it loads its config, exactly as in a predictor pod.

:func:`feature_store_status` reads the FeatureStore's status: ready once the Feast operator reports
phase ``Ready`` and condition ``FeatureStore=True``; ``online_url`` is where its feature server answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from mlplane.features.config import FeatureStoreConfigError, feature_store_config, secret_env, secret_env_name
from mlplane.spec.platform import Platform

Obj = dict[str, Any]

API_VERSION = "feast.dev/v1"
KIND = "FeatureStore"
PLURAL = "featurestores"
# The feast-operator's names for mlplane's offline store types (its `persistence.store.type` enum).
_OFFLINE_STORE_TYPES = {"bigquery": "bigquery", "snowflake": "snowflake.offline", "redshift": "redshift"}
_OFFLINE_FILE_TYPES = frozenset({"file", "dask", "duckdb"})


def feature_store_name(platform: Platform) -> str:
    """The FeatureStore's name: the Platform's (the Feast operator names its Services ``feast-<name>-...``)."""
    return platform.metadata.name


def settings_secret_name(platform: Platform, store: str) -> str:
    """The Secret holding a store's (non-secret) settings for the Feast operator."""
    return f"{feature_store_name(platform)}-feast-{store}-store"


def _labels(platform: Platform) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "mlplane", "app.kubernetes.io/part-of": "mlplane",
            "mlplane.io/platform": platform.metadata.name}


def _settings_secret(platform: Platform, namespace: str, store: str, key: str, settings: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": settings_secret_name(platform, store), "namespace": namespace,
                         "labels": _labels(platform)},
            "stringData": {key: yaml.safe_dump(settings, sort_keys=True)}}


def _registry(path: str) -> Obj:
    if not path.startswith(("/", "s3://", "gs://")):
        raise FeatureStoreConfigError(
            f"spec.featureStore.registry: {path!r}: the Feast operator takes a registry file as an absolute "
            "path or an 's3://' or 'gs://' URI (e.g. 's3://bucket/feast/registry.db')")
    return {"local": {"persistence": {"file": {"path": path}}}}


def feature_store(platform: Platform, namespace: str) -> list[Obj]:
    """The objects that provision ``platform``'s feature store: settings Secrets, then the FeatureStore.

    Empty when the feature store is disabled. Raises :class:`FeatureStoreConfigError` (naming the field)
    when the cluster cannot run it: no shared registry, a local-only store.
    """
    spec = platform.spec.feature_store
    if not spec.enabled:
        return []
    config = feature_store_config(platform, target="cluster")
    name = feature_store_name(platform)
    env = [{"name": env_name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
           for env_name, ref in secret_env(spec).items()]
    out: list[Obj] = []

    online = {k: v for k, v in config["online_store"].items() if k != "type"}
    out.append(_settings_secret(platform, namespace, "online", spec.online_store.type, online))
    server: Obj = {"env": env} if env else {}
    services: Obj = {
        "registry": _registry(config["registry"]["path"]),
        "onlineStore": {
            "persistence": {"store": {"type": spec.online_store.type,
                                      "secretRef": {"name": settings_secret_name(platform, "online")}}},
            "server": server,
        },
    }
    offline_type = spec.offline_store.type
    if offline_type in _OFFLINE_FILE_TYPES:
        services["offlineStore"] = {"persistence": {"file": {"type": offline_type}}}
    else:
        offline = {k: v for k, v in config["offline_store"].items() if k != "type"}
        feast_type = _OFFLINE_STORE_TYPES[offline_type]
        out.append(_settings_secret(platform, namespace, "offline", feast_type, offline))
        services["offlineStore"] = {
            "persistence": {"store": {"type": feast_type,
                                      "secretRef": {"name": settings_secret_name(platform, "offline")}}},
            "server": server,
        }
    out.append({"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": namespace, "labels": _labels(platform)},
                "spec": {"feastProject": spec.project, "services": services}})
    return out


@dataclass(frozen=True)
class FeatureStoreState:
    """What the Feast operator reports: ready or why not, and where the online feature server answers."""

    ready: bool
    reason: str
    message: str
    online_url: str | None = None
    client_config_map: str | None = None


def feature_store_status(obj: Obj | None) -> FeatureStoreState:
    """Read a FeatureStore object (``None``: not created yet) as a condition-ready state."""
    if obj is None:
        return FeatureStoreState(False, "FeatureStoreMissing", "the FeatureStore does not exist yet")
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    conditions = status.get("conditions") or []
    ready_condition: Obj = next((c for c in conditions if c.get("type") == "FeatureStore"), {})
    host = (status.get("serviceHostnames") or {}).get("onlineStore")
    url = None
    if host:
        url = f"https://{host}" if host.endswith(":443") else f"http://{host}"
    ready = phase == "Ready" and ready_condition.get("status") == "True" and url is not None
    if ready:
        reason, message = "Ready", f"Feast feature server at {url}"
    elif phase == "Failed" or ready_condition.get("status") == "False":
        reason = ready_condition.get("reason") or "FeatureStoreFailed"
        message = ready_condition.get("message") or f"the Feast operator reports phase {phase}"
    else:
        reason, message = "FeatureStorePending", f"the Feast operator reports phase {phase}"
    return FeatureStoreState(ready, reason, message, url if ready else None, status.get("clientConfigMap"))


__all__ = ["API_VERSION", "KIND", "PLURAL", "FeatureStoreState", "feature_store", "feature_store_name",
           "feature_store_status", "secret_env_name", "settings_secret_name"]
