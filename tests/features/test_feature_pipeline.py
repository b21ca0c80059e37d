"""The feature pipeline on a real Feast repo (the platform's local config): apply, incremental
materialization into the sqlite online store, and point-in-time-correct training data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplane.features.config import feature_store_config
from mlplane.features.local import write_repo_config
from mlplane.spec import load_dict
from mlplane_pipelines import features as F
from mlplane_pipelines.iris import FEATURES, load_data

BASE = F.default_base()  # snapshots 3, 2 and 1 days ago: inside the feature view TTL


def _platform(**feature_store):
    return load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform", "metadata": {"name": "t"},
                      "spec": {"featureStore": {"enabled": True, **feature_store}}})


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    feast_dir = tmp_path_factory.mktemp("state") / "feast"
    write_repo_config(_platform(project="pit"), feast_dir)
    source = F.write_source(feast_dir / "data", BASE)
    F.apply(F.store(feast_dir), source)
    return feast_dir


def test_local_config_keeps_every_store_under_the_state_dir(repo):
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert config["project"] == "pit"
    assert config["registry"]["path"] == str(repo / "registry.db")
    assert config["online_store"] == {"type": "sqlite", "path": str(repo / "online.db")}
    assert config["offline_store"] == {"type": "file"}
    assert (repo / "registry.db").exists()


def _snapshot(flower: int, k: int) -> list[float]:
    X, _ = load_data()
    return (X.loc[flower] * F.GROWTH[k]).round(4).tolist()


def test_training_data_is_point_in_time_correct(repo):
    """A label sees the latest snapshot at or before its own time, never a later one."""
    times = {
        "before any snapshot": BASE - timedelta(hours=1),
        "at snapshot 0": BASE,
        "between 0 and 1": BASE + timedelta(hours=23),
        "between 1 and 2": BASE + timedelta(days=1, hours=12),
        "after snapshot 2": BASE + timedelta(days=2, hours=1),
    }
    entity_df = pd.DataFrame({"flower_id": [7] * len(times), "event_timestamp": list(times.values()),
                              "case": list(times)})
    got = F.training_frame(F.store(repo), entity_df).set_index("case")
    # Nothing known yet: Feast's file offline store leaves the row out rather than leak a later snapshot.
    assert "before any snapshot" not in got.index
    assert got.loc["at snapshot 0", FEATURES].tolist() == _snapshot(7, 0)
    assert got.loc["between 0 and 1", FEATURES].tolist() == _snapshot(7, 0)
    assert got.loc["between 1 and 2", FEATURES].tolist() == _snapshot(7, 1)
    assert got.loc["after snapshot 2", FEATURES].tolist() == _snapshot(7, 2)


def test_pipeline_labels_get_the_snapshot_before_them(repo):
    frame = F.training_frame(F.store(repo), F.labels(BASE)).set_index("flower_id").sort_index()
    assert len(frame) == 150
    for flower in (0, 1, 2, 50, 149):
        assert frame.loc[flower, FEATURES].tolist() == _snapshot(flower, flower % 3)


def test_incremental_materialize_moves_the_online_store_forward(repo):
    fs = F.store(repo)
    rows = {"flower_id": [4, 4000]}
    F.materialize(fs, BASE + timedelta(days=1, hours=12))
    first = fs.get_online_features(features=F.FEATURE_REFS, entity_rows=rows).to_dict()
    assert [first[f][0] for f in FEATURES] == _snapshot(4, 1)
    assert all(first[f][1] is None for f in FEATURES)  # no such flower
    F.materialize(fs, BASE + timedelta(days=2, hours=12))  # only what is new since the last run
    second = fs.get_online_features(features=F.FEATURE_REFS, entity_rows=rows).to_dict()
    assert [second[f][0] for f in FEATURES] == _snapshot(4, 2)


def test_cluster_config_uses_the_configured_stores_and_secret_references():
    platform = _platform(
        registry="s3://bucket/feast/registry.db",
        onlineStore={"type": "redis", "secrets": {"connection_string": {"name": "feast-redis", "key": "url"}}},
        offlineStore={"type": "snowflake", "options": {"account": "acme", "database": "FEAST"},
                      "secrets": {"password": {"name": "snowflake", "key": "password"}}},
    )
    config = feature_store_config(platform, target="cluster")
    assert config["registry"] == {"registry_type": "file", "path": "s3://bucket/feast/registry.db"}
    assert config["online_store"] == {"type": "redis",
                                      "connection_string": "${MLPLANE_FEAST_ONLINE_CONNECTION_STRING}"}
    assert config["offline_store"] == {"type": "snowflake", "account": "acme", "database": "FEAST",
                                       "password": "${MLPLANE_FEAST_OFFLINE_PASSWORD}"}


@pytest.mark.parametrize(("feature_store", "message"), [
    ({"onlineStore": {"type": "redis"}}, "spec.featureStore.registry"),
    ({"registry": "s3://b/r.db"}, "'sqlite' is a local file"),
])
def test_cluster_config_refuses_what_cannot_work_there(feature_store, message):
    from mlplane.features.config import FeatureStoreConfigError

    with pytest.raises(FeatureStoreConfigError, match=message):
        feature_store_config(_platform(**feature_store), target="cluster")


def test_inline_credentials_are_refused_with_the_field_path():
    from mlplane.spec import SpecError

    with pytest.raises(SpecError) as exc:
        _platform(onlineStore={"type": "redis", "options": {"connection_string": "redis://:hunter2@r:6379"}})
    text = str(exc.value)
    assert "spec.featureStore.onlineStore" in text and "put it under `secrets`" in text


# ------------------------------------------------------------------ the serving path's join (after materialize)
class _Input:
    def __init__(self, name, datatype, data):
        self.name, self.datatype, self.shape, self._array = name, datatype, [len(data)], np.array(data)

    def as_numpy(self):
        return self._array


def _join(repo, datatypes=("FP64",) * 4, **features):
    from mlplane.core.signature import TensorMeta
    from mlplane.features.online import FeatureJoin, OnlineFeatures
    from mlplane.spec.deployment import FeaturesSpec

    spec = FeaturesSpec.model_validate({"entityKey": "flower_id", "features": F.FEATURE_REFS, **features})
    inputs = [TensorMeta(f, t, (-1,)) for f, t in zip(FEATURES, datatypes, strict=True)]
    return FeatureJoin(OnlineFeatures(spec, repo / "feature_store.yaml"), inputs)


def test_join_swaps_entity_ids_for_typed_feature_columns(repo):
    join = _join(repo)
    assert [t.to_dict() for t in join.inputs] == [{"name": "flower_id", "datatype": "INT64", "shape": [-1]}]
    columns = {c.name: c.as_numpy() for c in join.join([_Input("flower_id", "INT64", [4, 9])])}
    assert list(columns) == FEATURES
    assert [columns[f][0] for f in FEATURES] == _snapshot(4, 2)
    assert all(c.dtype == np.float64 for c in columns.values())


def test_missing_entities_follow_on_missing(repo):
    from mlplane.features.online import EntityNotFound

    with pytest.raises(EntityNotFound, match=r"flower_id \[999\]"):
        _join(repo).join([_Input("flower_id", "INT64", [1, 999])])
    partial = {"onMissing": "default", "defaults": {F.FEATURE_REFS[0]: 5.0}}
    columns = {c.name: c.as_numpy() for c in _join(repo, **partial).join([_Input("flower_id", "INT64", [999])])}
    assert columns["sepal_length"][0] == 5.0 and np.isnan(columns["petal_width"][0])  # NaN: no default given
    ints = _join(repo, datatypes=("FP64", "FP64", "FP64", "INT64"), **partial)
    with pytest.raises(EntityNotFound, match="no value for it in features.defaults"):
        ints.join([_Input("flower_id", "INT64", [999])])


def test_unknown_features_and_wrong_keys_are_named(repo):
    from mlplane.features.online import FeatureLookupError, OnlineFeatures
    from mlplane.spec.deployment import FeaturesSpec

    spec = FeaturesSpec(entity_key="user_id", features=["iris_measurements:sepal_length", "nope:x"])
    with pytest.raises(FeatureLookupError) as exc:
        OnlineFeatures(spec, repo / "feature_store.yaml")
    assert "keyed by ['flower_id'], not entityKey 'user_id'" in str(exc.value)
    assert "feature view 'nope' does not exist" in str(exc.value)
