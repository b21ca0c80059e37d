"""What the local supervisor does for the feature store: write the repo config, check deployments."""

from __future__ import annotations

import json
from pathlib import Path

from mlplane.features.config import FEATURE_STORE_YAML, feature_store_yaml
from mlplane.features.online import FeatureLookupError, OnlineFeatures
from mlplane.spec import ModelDeployment, Platform
from mlplane.spec.capabilities import capabilities, runtimes_with
from mlplane.spec.effective import effective_runtime


def write_repo_config(platform: Platform, feast_dir: Path) -> Path:
    """Write ``feast_dir/feature_store.yaml`` (atomically) and the dirs the feature server needs."""
    (feast_dir / "run").mkdir(parents=True, exist_ok=True)
    (feast_dir / "data").mkdir(exist_ok=True)
    path = feast_dir / FEATURE_STORE_YAML
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(feature_store_yaml(platform, feast_dir))
    tmp.replace(path)
    return path


def features_json(dep: ModelDeployment) -> str:
    """``spec.features`` as the model server's ``--features`` argument."""
    assert dep.spec.features is not None
    return json.dumps(dep.spec.features.model_dump(mode="json", by_alias=True), separators=(",", ":"))


def check_deployment(platform: Platform, feast_dir: Path, dep: ModelDeployment) -> None:
    """Refuse (:class:`FeatureLookupError`) ``spec.features`` the platform's feature store cannot serve.

    Reads the Feast registry (blocking: run it in a worker thread).
    """
    if dep.spec.features is None:
        return
    runtime = effective_runtime(dep, platform)
    if not capabilities(runtime).features:
        joined_by = " or ".join(f"'{n}'" for n in runtimes_with("features"))
        raise FeatureLookupError(f"spec.features: online features are joined by runtime {joined_by} only (runtime "
                                 f"is '{runtime}'); set runtime: kserve or remove `features`")
    if not platform.spec.feature_store.enabled:
        raise FeatureLookupError(
            "spec.features needs the platform's feature store: set spec.featureStore.enabled: true in the "
            "Platform and restart it (mlplane down; mlplane up -f platform.yaml)")
    OnlineFeatures(dep.spec.features, feast_dir / FEATURE_STORE_YAML)
