"""Train a scikit-learn classifier on the iris data set, log it to MLflow and register it.

    python -m mlplane_pipelines.iris --tracking-uri http://127.0.0.1:5000 --alias champion

The model is logged with params, metrics and a signature (four FP64 feature columns in, the
predicted class id out), registered under ``--name`` and optionally given an alias.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from mlplane.registry import register_model

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SKLEARN_REQUIREMENTS = ["scikit-learn", "pandas", "numpy"]


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    accuracy: float


def load_data() -> tuple[pd.DataFrame, pd.Series]:
    data = load_iris(as_frame=True)
    X = data.data.copy()
    X.columns = FEATURES
    return X, data.target.astype("int64").rename("species")


def train_and_register(tracking_uri: str, name: str = "iris", C: float = 1.0, max_iter: int = 200,
                       alias: str | None = None, experiment: str = "iris") -> Registered:
    X, y = load_data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    model = LogisticRegression(C=C, max_iter=max_iter).fit(X_train, y_train)
    pred = model.predict(X_test)
    accuracy = float(accuracy_score(y_test, pred))
    registered = register_model(
        tracking_uri, name,
        lambda registered_name: mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X_train, model.predict(X_train)),
            registered_model_name=registered_name,
            # Naming requirements skips MLflow's slow dependency inference.
            pip_requirements=SKLEARN_REQUIREMENTS,
        ),
        experiment=experiment, run_name=f"logreg-C{C}", alias=alias,
        params={"model": "LogisticRegression", "C": C, "max_iter": max_iter, "test_size": 0.3,
                "dataset": "sklearn.datasets.load_iris"},
        metrics={"accuracy": accuracy, "f1_macro": float(f1_score(y_test, pred, average="macro"))},
    )
    return Registered(name=name, version=registered.version, run_id=registered.run_id, accuracy=accuracy)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--name", default="iris")
    p.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    p.add_argument("--alias", default=None, help="alias to point at the new version, e.g. champion")
    a = p.parse_args(argv)
    r = train_and_register(a.tracking_uri, a.name, C=a.C, alias=a.alias)
    print(f"registered {r.name} version {r.version} (accuracy {r.accuracy:.3f}, run {r.run_id})")


if __name__ == "__main__":
    main()
