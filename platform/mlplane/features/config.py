"""The Feast repo config (``feature_store.yaml``) of a platform. Pure: no I/O, no feast import.

Locally the stores live under the state dir (``.mlplane/feast/``): a file registry, a sqlite online
store and the file offline store (parquet sources). In the cluster the configured stores are used.
Credentials never appear in the config: a setting under ``secrets`` becomes ``${ENV_VAR}``, which
Feast expands when it loads the file; the env var comes from the Secret (cluster) or the shell (local).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from mlplane.spec.platform import FeatureStoreSpec, OfflineStoreSpec, OnlineStoreSpec, Platform, SecretKeyRef

Target = Literal["local", "cluster"]

FEATURE_STORE_YAML = "feature_store.yaml"
ENTITY_KEY_SERIALIZATION_VERSION = 3


class FeatureStoreConfigError(ValueError):
    """The platform's feature store cannot be configured for the target (names the field)."""


def secret_env_name(store: str, setting: str) -> str:
    """``("online", "connection_string")`` -> ``MLPLANE_FEAST_ONLINE_CONNECTION_STRING``."""
    return f"MLPLANE_FEAST_{store.upper()}_{setting.upper()}"


def secret_env(spec: FeatureStoreSpec) -> dict[str, SecretKeyRef]:
    """Every env var the config refers to, with the Secret key it comes from in the cluster."""
    out: dict[str, SecretKeyRef] = {}
    for store, section in (("online", spec.online_store), ("offline", spec.offline_store)):
        for setting, ref in section.secrets.items():
            out[secret_env_name(store, setting)] = ref
    return out


def _store(store: str, section: OnlineStoreSpec | OfflineStoreSpec, type_: str) -> dict[str, Any]:
    config: dict[str, Any] = {"type": type_, **section.options}
    for setting in section.secrets:
        config[setting] = "${" + secret_env_name(store, setting) + "}"
    return config


def feature_store_config(platform: Platform, feast_dir: Path | None = None, *,
                         target: Target = "local") -> dict[str, Any]:
    """The ``feature_store.yaml`` content for ``platform`` (``feast_dir``: the local repo dir).

    Raises :class:`FeatureStoreConfigError` when the cluster target lacks what it needs.
    """
    spec = platform.spec.feature_store
    online = _store("online", spec.online_store, spec.online_store.type)
    offline = _store("offline", spec.offline_store, spec.offline_store.type)
    if target == "local":
        if feast_dir is None:
            raise ValueError("the local feature store config needs the state dir's feast directory")
        registry = spec.registry or str(feast_dir / "registry.db")
        if spec.online_store.type == "sqlite":
            online.setdefault("path", str(feast_dir / "online.db"))
    else:
        if not spec.registry:
            raise FeatureStoreConfigError(
                "spec.featureStore.registry: the cluster needs a shared Feast registry "
                "(e.g. 's3://bucket/feast/registry.db')")
        if spec.online_store.type == "sqlite":
            raise FeatureStoreConfigError(
                "spec.featureStore.onlineStore.type: 'sqlite' is a local file; the cluster needs "
                "'redis' or 'postgres'")
        registry = spec.registry
    return {
        "project": spec.project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": registry},
        "online_store": online,
        "offline_store": offline,
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def feature_store_yaml(platform: Platform, feast_dir: Path | None = None, *, target: Target = "local") -> str:
    """:func:`feature_store_config` as YAML text."""
    return yaml.safe_dump(feature_store_config(platform, feast_dir, target=target), sort_keys=False)
