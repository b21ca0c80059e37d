"""The local runtime's pure planning: what processes it would run, with what arguments and environment."""

from __future__ import annotations

from pathlib import Path

from mlplane.core.statedir import resolve_state_dir
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import (
    Endpoint,
    ResolvedModel,
    kserve_process,
    mlflow_process,
    process_environment,
)
from mlplane.spec.platform import Platform


def test_mlflow_binds_loopback_with_sqlite_and_local_artifacts(tmp_path: Path):
    paths = StatePaths(tmp_path)
    spec = mlflow_process(paths, "127.0.0.1", 5123)
    argv = list(spec.argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "5123"
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "mlflow" / "artifacts")
    # MLflow's job runner would otherwise fork workers that outlive the server.
    assert spec.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert spec.ready_url == "http://127.0.0.1:5123/health"
    assert spec.log == tmp_path / "logs" / "mlflow.log"


def test_external_stores_are_passed_through(tmp_path: Path):
    spec = mlflow_process(StatePaths(tmp_path), "127.0.0.1", 5000, "postgresql://db/mlflow", "s3://bucket/art")
    assert "postgresql://db/mlflow" in spec.argv and "s3://bucket/art" in spec.argv


def test_model_server_process_points_at_the_platforms_mlflow(tmp_path: Path):
    model = ResolvedModel(uri="models:/iris/3", version="3")
    spec = kserve_process(StatePaths(tmp_path), "iris", model, Endpoint("127.0.0.1", 8001, 8002),
                          "http://127.0.0.1:5000", 1024 * 1024, 15)
    argv = list(spec.argv)
    assert argv[argv.index("--model-uri") + 1] == "models:/iris/3"
    assert argv[argv.index("--model-version") + 1] == "3"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--grpc-port") + 1] == "8002"
    assert "--no-grpc" not in argv
    assert spec.env["MLFLOW_TRACKING_URI"] == spec.env["MLFLOW_REGISTRY_URI"] == "http://127.0.0.1:5000"
    assert spec.ready_url == "http://127.0.0.1:8001/v2/models/iris/ready"


def test_http_only_endpoint(tmp_path: Path):
    endpoint = Endpoint("127.0.0.1", 8001, None)
    model = ResolvedModel(uri="/m", version="")
    spec = kserve_process(StatePaths(tmp_path), "m", model, endpoint, "http://x", 1024, 1)
    assert "--no-grpc" in spec.argv
    assert endpoint.grpc is None and endpoint.url == "http://127.0.0.1:8001"


def test_children_never_inherit_another_mlflow_from_the_shell(tmp_path: Path, monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        monkeypatch.setenv(var, "http://elsewhere:1")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")  # storage settings pass through
    model = ResolvedModel(uri="models:/iris/1", version="1")
    spec = kserve_process(StatePaths(tmp_path), "iris", model, Endpoint("127.0.0.1", 1, 2), "http://ours:5", 1024, 1)
    env = process_environment(spec)
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == "http://ours:5"
    assert "MLFLOW_EXPERIMENT_ID" not in env and "MLFLOW_RUN_ID" not in env
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_state_dir_precedence(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLPLANE_STATE_DIR", raising=False)
    assert resolve_state_dir() == tmp_path / ".mlplane"
    monkeypatch.setenv("MLPLANE_STATE_DIR", str(tmp_path / "env"))
    assert resolve_state_dir() == tmp_path / "env"
    assert resolve_state_dir(tmp_path / "flag") == tmp_path / "flag"


def test_socket_path_stays_within_the_unix_limit(tmp_path: Path):
    short = StatePaths(tmp_path)
    assert short.socket == tmp_path / "supervisor.sock"
    deep = StatePaths(tmp_path / ("x" * 120))
    assert len(str(deep.socket)) < 108
    assert deep.socket != StatePaths(tmp_path / ("y" * 120)).socket


def test_free_port_prefers_the_previous_port_when_free():
    import socket

    from mlplane.runtime.local.process import free_port

    port = free_port()
    assert free_port(preferred=port) == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        other = free_port(preferred=port)
    assert other != port


def test_runtimes_come_from_a_registry_with_a_clear_error_for_missing_ones(tmp_path: Path):
    import pytest

    from mlplane.runtime.local.runtimes import ServingContext, UnsupportedRuntime, runtime_for

    kserve = runtime_for("kserve")
    model = ResolvedModel(uri="models:/iris/4", version="4")
    load = kserve.load_request("iris", model)
    assert load.path == "/v2/repository/models/iris/load"
    assert load.body == {"parameters": {"model_uri": "models:/iris/4", "model_version": "4"}}
    platform = Platform.model_validate({"metadata": {"name": "local"},
                                       "spec": {"serving": {"maxRequestBytes": 1024, "gracePeriodSeconds": 5}}})
    ctx = ServingContext(StatePaths(tmp_path), "http://127.0.0.1:5000", platform)
    assert "mlplane.serving" in kserve.process(ctx, "iris", model, Endpoint("127.0.0.1", 1, 2)).argv
    assert runtime_for("ray").capabilities.grpc is False  # Ray Serve answers HTTP only
    with pytest.raises(UnsupportedRuntime, match="spec.runtime: 'onnx' is not available.*'kserve'"):
        runtime_for("onnx")
