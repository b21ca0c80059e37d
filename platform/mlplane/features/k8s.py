"""The cluster side of ``spec.features``: what a predictor pod needs to read online features. Pure.

The model server reads the online store with the Feast SDK, as it does locally, so the pod gets:
the platform's cluster ``feature_store.yaml`` in a ConfigMap (credentials only as ``${ENV}``
references), mounted read-only; ``MLPLANE_FEATURE_STORE_YAML`` pointing at it; ``MLPLANE_FEATURES``
(the deployment's ``spec.features`` as JSON); and every store credential as an env var from its
Secret (``secretKeyRef``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlplane.features.config import FEATURE_STORE_YAML, feature_store_yaml, secret_env
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.platform import Platform

Obj = dict[str, Any]

MOUNT_PATH = "/etc/mlplane/feast"
VOLUME = "feature-store"


def configmap_name(deployment: ModelDeployment) -> str:
    return f"{deployment.metadata.name}-feature-store"


@dataclass(frozen=True)
class PodFeatures:
    """Additions to the predictor: the ConfigMap's data, the model container's env and mounts, pod volumes."""

    config_data: dict[str, str]
    env: list[Obj]
    volume_mounts: list[Obj]
    volumes: list[Obj]


def pod_features(deployment: ModelDeployment, platform: Platform) -> PodFeatures:
    """What the predictor of a deployment with ``spec.features`` needs (``ValueError`` naming the field)."""
    features = deployment.spec.features
    assert features is not None
    if not platform.spec.feature_store.enabled:
        raise ValueError(f"{deployment.metadata.name}: spec.features needs the platform's feature store "
                         "(spec.featureStore.enabled: true in the Platform)")
    config = feature_store_yaml(platform, target="cluster")
    env: list[Obj] = [
        {"name": "MLPLANE_FEATURES",
         "value": json.dumps(features.model_dump(mode="json", by_alias=True), separators=(",", ":"))},
        {"name": "MLPLANE_FEATURE_STORE_YAML", "value": f"{MOUNT_PATH}/{FEATURE_STORE_YAML}"},
    ]
    for name, ref in secret_env(platform.spec.feature_store).items():
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return PodFeatures(
        config_data={FEATURE_STORE_YAML: config},
        env=env,
        volume_mounts=[{"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}],
        volumes=[{"name": VOLUME, "configMap": {"name": configmap_name(deployment)}}],
    )
