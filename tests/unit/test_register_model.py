"""`mlplane.registry.register_model` and `tracking()` against real MLflow stores (SQLite files, no server).

Registration logs a run, registers a version and moves the alias; `tracking(uri)` scopes MLflow's
process-wide tracking and registry URIs and restores them, one block at a time per process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel

from mlplane.registry import logged_run, register_model, tracking
from mlplane_pipelines.iris import train_and_register


class Echo(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


def _log_echo(registered_name: str):
    return mlflow.pyfunc.log_model(name="model", python_model=Echo(), registered_model_name=registered_name,
                                   pip_requirements=["mlflow"])


def _store(root: Path, name: str) -> str:
    return f"sqlite:///{root / f'{name}.db'}"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """Two SQLite tracking stores; artifacts land under the module's temporary directory (the cwd)."""
    root = tmp_path_factory.mktemp("mlflow")
    cwd = os.getcwd()
    os.chdir(root)  # SQLite stores put artifacts under ./mlruns
    try:
        yield _store(root, "a"), _store(root, "b")
    finally:
        os.chdir(cwd)


@pytest.fixture(autouse=True)
def clean_globals(monkeypatch: pytest.MonkeyPatch):
    """Each test starts with MLflow's globals and their environment mirrors unset."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)


def _globals() -> tuple[str | None, str | None, str | None, str | None]:
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (tracking_utils._tracking_uri, registry_utils._registry_uri, os.environ.get("MLFLOW_TRACKING_URI"),
            os.environ.get("MLFLOW_REGISTRY_URI"))


def test_registration_logs_a_run_registers_a_version_and_moves_the_alias(stores):
    uri = stores[0]
    first = register_model(uri, "echo", _log_echo, experiment="reg-tests", run_name="first",
                           params={"p": 1}, metrics={"m": 0.5}, alias="champion")
    second = register_model(uri, "echo", _log_echo, experiment="reg-tests")
    client = MlflowClient(uri, uri)
    assert (first.name, first.version, second.version) == ("echo", "1", "2")
    assert str(client.get_model_version_by_alias("echo", "champion").version) == "1"  # no alias given: unmoved
    third = register_model(uri, "echo", _log_echo, experiment="reg-tests", alias="champion")
    assert str(client.get_model_version_by_alias("echo", "champion").version) == third.version == "3"
    run = client.get_run(first.run_id)
    assert run.info.run_name == "first" and run.data.params == {"p": "1"} and run.data.metrics == {"m": 0.5}
    assert client.get_model_version("echo", "1").run_id == first.run_id
    assert client.get_experiment(run.info.experiment_id).name == "reg-tests"
    assert _globals() == (None, None, None, None)  # nothing left pointing at the store


def test_iris_pipeline_registers_through_register_model(stores):
    uri = stores[1]
    registered = train_and_register(uri, "iris-reg", alias="champion", experiment="iris-reg")
    client = MlflowClient(uri, uri)
    assert str(client.get_model_version_by_alias("iris-reg", "champion").version) == registered.version
    run = client.get_run(registered.run_id)
    assert run.data.metrics["accuracy"] == pytest.approx(registered.accuracy) and run.data.params["C"] == "1.0"
    assert _globals() == (None, None, None, None)


def test_tracking_sets_both_uris_and_restores_the_previous_ones(stores, monkeypatch):
    a, b = stores
    mlflow.set_tracking_uri(a)
    mlflow.set_registry_uri(a)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///elsewhere.db")
    before = _globals()
    with tracking(b):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (b, b)
        assert os.environ["MLFLOW_TRACKING_URI"] == os.environ["MLFLOW_REGISTRY_URI"] == b
        with tracking(a):  # re-entrant: nested blocks restore the outer one
            assert mlflow.get_registry_uri() == a
        assert mlflow.get_registry_uri() == b
    assert _globals() == before


def test_tracking_restores_unset_uris_after_a_failure(stores):
    with pytest.raises(RuntimeError, match="inside"), tracking(stores[0]):
        raise RuntimeError("inside")
    assert _globals() == (None, None, None, None)


def test_tracking_none_changes_nothing(stores):
    mlflow.set_tracking_uri(stores[0])
    before = _globals()
    with tracking(None):
        assert mlflow.get_tracking_uri() == stores[0]
    assert _globals() == before


def test_concurrent_blocks_each_see_their_own_uri(stores):
    seen: dict[str, set[str]] = {uri: set() for uri in stores}

    def work(uri: str) -> None:
        for _ in range(200):
            with tracking(uri):
                for _ in range(5):
                    seen[uri].add(mlflow.get_tracking_uri())
                    seen[uri].add(mlflow.get_registry_uri())

    threads = [threading.Thread(target=work, args=(uri,)) for uri in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {uri: {uri} for uri in stores}
    assert _globals() == (None, None, None, None)


def test_concurrent_registrations_land_in_their_own_store(stores):
    """Two threads registering into two MLflow stores at once: neither's model ends up in the other."""
    errors: list[BaseException] = []

    def work(uri: str, name: str) -> None:
        try:
            for _ in range(2):
                register_model(uri, name, _log_echo, experiment="concurrent", alias="champion")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(uri, f"only-in-{i}")) for i, uri in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, uri in enumerate(stores):
        names = {m.name for m in MlflowClient(uri, uri).search_registered_models()}
        assert f"only-in-{i}" in names and f"only-in-{1 - i}" not in names
        assert str(MlflowClient(uri, uri).get_model_version_by_alias(f"only-in-{i}", "champion").version) == "2"


def test_logged_run_creates_the_experiment_and_keeps_stdout_clean(stores, capsys):
    with logged_run(stores[0], "logged", "r", tags={"t": "v"}, params={"k": "v"}, metrics={"x": 1.0}) as run:
        mlflow.log_metric("y", 2.0)
    data = MlflowClient(stores[0]).get_run(run.info.run_id).data
    assert data.tags["t"] == "v" and data.params == {"k": "v"} and data.metrics == {"x": 1.0, "y": 2.0}
    assert capsys.readouterr().out == ""
