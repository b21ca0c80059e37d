"""The iris feature pipeline on Feast: sources, definitions, materialization, training data, retraining.

    python -m mlplane_pipelines.features --repo .mlplane/feast --tracking-uri http://127.0.0.1:5000

Each iris flower is an entity (``flower_id``) measured several times: snapshot ``k`` of a flower is
taken ``SNAPSHOT_DAYS[k]`` days after ``base`` and holds its measurements scaled by
``GROWTH[k]`` (the last snapshot is the data set's own measurement). The label of flower ``i`` is
observed half a day after snapshot ``i % 3``, so point-in-time-correct training data holds that
snapshot's values, never a later one's.

Steps: write the parquet source, ``apply`` the entity and feature view, ``materialize_incremental``
into the online store, ``get_historical_features`` for the labels, train a classifier on them and
register it in MLflow (as ``iris-features``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feast
import mlflow
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from mlplane.registry import register_model
from mlplane_pipelines.iris import FEATURES, SKLEARN_REQUIREMENTS, Registered, load_data

ENTITY = "flower"
ENTITY_KEY = "flower_id"
FEATURE_VIEW = "iris_measurements"
FEATURE_REFS = [f"{FEATURE_VIEW}:{f}" for f in FEATURES]
SNAPSHOT_DAYS = (0, 1, 2)
GROWTH = (0.8, 0.9, 1.0)
LABEL_DELAY = timedelta(hours=12)
TTL = timedelta(days=30)
SOURCE_FILE = "iris_measurements.parquet"


def default_base() -> datetime:
    """Three days ago at midnight UTC: every snapshot is in the past and inside the TTL."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=len(SNAPSHOT_DAYS))


def measurements(base: datetime) -> pd.DataFrame:
    """One row per flower and snapshot: ``flower_id``, ``event_timestamp`` and the four features."""
    X, _ = load_data()
    frames = []
    for days, growth in zip(SNAPSHOT_DAYS, GROWTH, strict=True):
        frame = (X * growth).round(4)
        frame.insert(0, "event_timestamp", pd.Timestamp(base + timedelta(days=days)))
        frame.insert(0, ENTITY_KEY, X.index.astype("int64"))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def labels(base: datetime) -> pd.DataFrame:
    """The entity frame for training: ``flower_id``, the time its label was observed, ``species``."""
    _, y = load_data()
    ids = y.index.astype("int64")
    snapshot = ids % len(SNAPSHOT_DAYS)
    times = [pd.Timestamp(base + timedelta(days=SNAPSHOT_DAYS[k]) + LABEL_DELAY) for k in snapshot]
    return pd.DataFrame({ENTITY_KEY: ids, "event_timestamp": times, "species": y.to_numpy()})


def write_source(data_dir: Path, base: datetime) -> Path:
    """Write the measurements to ``data_dir/iris_measurements.parquet`` and return its path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SOURCE_FILE
    measurements(base).to_parquet(path, index=False)
    return path


def definitions(source: str | Path) -> tuple[feast.Entity, feast.FeatureView]:
    """The ``flower`` entity and the ``iris_measurements`` feature view over the parquet ``source``."""
    flower = Entity(name=ENTITY, join_keys=[ENTITY_KEY], value_type=ValueType.INT64,
                    description="One iris flower, measured several times.")
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[flower],
        ttl=TTL,
        schema=[Field(name=f, dtype=Float64) for f in FEATURES],
        source=FileSource(name="iris_measurements_source", path=str(source), timestamp_field="event_timestamp"),
        online=True,
    )
    return flower, view


def store(repo: Path) -> feast.FeatureStore:
    """The Feast store of the repo directory holding ``feature_store.yaml`` (``.mlplane/feast`` locally)."""
    return FeatureStore(repo_path=str(repo))


def apply(fs: feast.FeatureStore, source: str | Path) -> None:
    """Register (or update) the entity and feature view in the Feast registry."""
    fs.apply(list(definitions(source)))


def materialize(fs: feast.FeatureStore, end: datetime | None = None) -> None:
    """Load what is new since the last run (up to ``end``, default now) into the online store."""
    fs.materialize_incremental(end_date=end or datetime.now(UTC), feature_views=[FEATURE_VIEW])


def training_frame(fs: feast.FeatureStore, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct features for each ``(flower_id, event_timestamp)`` row of ``entity_df``."""
    return fs.get_historical_features(entity_df=entity_df, features=FEATURE_REFS).to_df()


def train_on_features(tracking_uri: str, repo: Path, name: str = "iris-features", base: datetime | None = None,
                      alias: str | None = None, experiment: str = "iris-features", C: float = 1.0) -> Registered:
    """Train on Feast's historical features for the labels and register the model in MLflow.

    The model's signature is the four feature columns in :data:`FEATURES` order, so a deployment
    with ``features:`` fetching :data:`FEATURE_REFS` joins them straight in.
    """
    fs = store(repo)
    frame = training_frame(fs, labels(base or default_base())).dropna(subset=FEATURES)
    X, y = frame[FEATURES], frame["species"].astype("int64")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    model = LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)
    accuracy = float(accuracy_score(y_test, model.predict(X_test)))
    registered = register_model(
        tracking_uri, name,
        lambda registered_name: mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(X_train, model.predict(X_train)),
            registered_model_name=registered_name, pip_requirements=SKLEARN_REQUIREMENTS,
        ),
        experiment=experiment, run_name=f"feast-logreg-C{C}", alias=alias,
        params={"model": "LogisticRegression", "C": C, "features": ",".join(FEATURE_REFS), "rows": len(frame),
                "feature_store": "feast"},
        metrics={"accuracy": accuracy},
    )
    return Registered(name=name, version=registered.version, run_id=registered.run_id, accuracy=accuracy)


@dataclass(frozen=True)
class PipelineResult:
    source: Path
    registered: Registered | None


def run(repo: Path, tracking_uri: str | None = None, name: str = "iris-features", alias: str | None = None,
        base: datetime | None = None) -> PipelineResult:
    """The whole pipeline: source, apply, incremental materialize, and (with MLflow) retrain + register."""
    base = base or default_base()
    source = write_source(repo / "data", base)
    fs = store(repo)
    apply(fs, source)
    materialize(fs)
    registered = train_on_features(tracking_uri, repo, name, base, alias) if tracking_uri else None
    return PipelineResult(source, registered)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, default=Path(".mlplane/feast"),
                   help="Feast repo dir with feature_store.yaml (written by `mlplane up`)")
    p.add_argument("--tracking-uri", default=None, help="MLflow to register the retrained model in")
    p.add_argument("--name", default="iris-features")
    p.add_argument("--alias", default=None, help="alias to point at the new version, e.g. champion")
    a = p.parse_args(argv)
    result = run(a.repo, a.tracking_uri, a.name, a.alias)
    print(f"applied {FEATURE_VIEW} over {result.source} and materialized it")
    if result.registered:
        r = result.registered
        print(f"registered {r.name} version {r.version} (accuracy {r.accuracy:.3f}, run {r.run_id})")


if __name__ == "__main__":
    main()
