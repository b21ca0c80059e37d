"""Pure planning: spec in, process specs out. Nothing here starts a process or opens a socket.

The supervisor (the thin executor) turns a :class:`ProcessSpec` into a running, supervised process.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlplane.auth.mlflow import APP_NAME as MLFLOW_AUTH_APP
from mlplane.auth.mlflow import MlflowAuthFiles, read_env_file
from mlplane.resolution import ResolvedModel  # what the servers load: mlplane.resolution.resolve_model's result
from mlplane.runtime.local.paths import StatePaths
from mlplane.spec.platform import AuthSpec
from mlplane.triton.args import (  # noqa: F401 (TRITON_* re-exported: runtimes, tests, bench)
    TRITON_CONTROL_HEADER,
    TRITON_HTTP_INFERENCE_CLOSED,
    TRITON_RESTRICTED,
    restricted_api_args,
    triton_http_inference_header,
)

MLFLOW_COMPONENT = "mlflow"
FEATURE_STORE_COMPONENT = "feast"
VECTOR_STORE_COMPONENT = "milvus"
RESERVED_NAMES = frozenset({MLFLOW_COMPONENT, FEATURE_STORE_COMPONENT, VECTOR_STORE_COMPONENT, "supervisor"})


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one component: command, environment, log file and readiness probe."""

    name: str
    kind: str
    argv: tuple[str, ...]
    log: Path
    ready_url: str  # http(s)://…: ready on a 200; tcp://host:port: ready once it accepts a connection
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    # Env files (KEY=VALUE, mode 0600) read when the process starts: secrets stay out of the spec,
    # the command line and state.json.
    env_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    host: str
    http_port: int
    grpc_port: int | None  # None: HTTP only
    metrics_port: int | None = None  # None: the server has no separate Prometheus port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str | None:
        return f"{self.host}:{self.grpc_port}" if self.grpc_port else None

    @property
    def metrics(self) -> str | None:
        return f"http://{self.host}:{self.metrics_port}/metrics" if self.metrics_port else None


def _child_env(extra: Mapping[str, str], tracking_uri: str | None = None) -> dict[str, str]:
    """A child's environment additions; with ``tracking_uri`` it reaches that MLflow for runs and models."""
    env = {"PYTHONUNBUFFERED": "1"}
    if tracking_uri is not None:
        env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri)
    env.update(extra)
    return env


def mlflow_process(paths: StatePaths, host: str, port: int, backend_store_uri: str | None = None,
                   artifacts_destination: str | None = None, auth: MlflowAuthFiles | None = None) -> ProcessSpec:
    """MLflow tracking server + model registry on a sqlite backend with a local artifact store.

    With ``auth`` (``spec.auth.enabled``): MLflow behind basic auth (``--app-name mlplane-auth``, see
    :mod:`mlplane.auth.mlflow_app`); its user comes from ``auth.server_env`` when it starts, never the spec.
    """
    backend = backend_store_uri or f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}"
    artifacts = artifacts_destination or str(paths.mlflow_dir / "artifacts")
    argv: tuple[str, ...] = (
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", artifacts,
        "--host", host,
        "--port", str(port),
        "--workers", "2",
    )
    env = _child_env({
        # Without this MLflow forks job-runner workers that outlive the server.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    })
    env_files: tuple[Path, ...] = ()
    if auth is not None:
        argv += ("--app-name", MLFLOW_AUTH_APP)
        env_files = (auth.server_env,)
    return ProcessSpec(
        name=MLFLOW_COMPONENT,
        kind="mlflow",
        argv=argv,
        env=env,
        env_files=env_files,
        log=paths.log_file(MLFLOW_COMPONENT),
        ready_url=f"http://{host}:{port}/health",
        ready_timeout_s=120.0,
    )


def kserve_process(paths: StatePaths, name: str, model: ResolvedModel, endpoint: Endpoint,
                   tracking_uri: str, max_request_bytes: int, grace_period_s: int,
                   auth: AuthSpec | None = None) -> ProcessSpec:
    """A KServe V2 model server (HTTP + gRPC) loading one MLflow pyfunc model.

    With ``auth.enabled`` it gets the key file's path and the default per-key limit, never a key.
    Version swaps go through its control socket (``paths.control_socket``), never its public ports.
    """
    argv = (
        sys.executable, "-m", "mlplane.serving",
        "--name", name,
        "--model-uri", model.uri,
        "--model-version", model.version,
        "--host", endpoint.host,
        "--http-port", str(endpoint.http_port),
        "--grpc-port", str(endpoint.grpc_port or 0),
        "--max-request-bytes", str(max_request_bytes),
        "--grace-period", str(grace_period_s),
        "--control-socket", str(paths.control_socket(name)),
    ) + (() if endpoint.grpc_port else ("--no-grpc",))
    if auth is not None and auth.enabled:
        argv += ("--auth-keys-file", str(paths.auth_keys_file),
                 "--auth-rps", format(auth.rate_limit.requests_per_second, "g"),
                 "--auth-burst", str(auth.rate_limit.burst))
    env = _child_env({}, tracking_uri)
    return ProcessSpec(
        name=name,
        kind="model-server",
        argv=argv,
        env=env,
        log=paths.log_file(name),
        ready_url=f"{endpoint.url}/v2/models/{name}/ready",
    )


def feature_server_process(paths: StatePaths, host: str, port: int) -> ProcessSpec:
    """The Feast feature server (``feast serve``, HTTP) on the state dir's Feast repo."""
    argv = (
        sys.executable, "-m", "feast.cli.cli",
        "--feature-store-yaml", str(paths.feature_store_yaml),
        "serve",
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        "--no-access-log",
    )
    return ProcessSpec(
        name=FEATURE_STORE_COMPONENT,
        kind="feature-server",
        argv=argv,
        # gunicorn's control socket goes to $XDG_RUNTIME_DIR: one per platform, not ~/.gunicorn for all.
        env=_child_env({"XDG_RUNTIME_DIR": str(paths.feast_dir / "run")}),
        log=paths.log_file(FEATURE_STORE_COMPONENT),
        ready_url=f"http://{host}:{port}/health",
    )


def milvus_lite_process(paths: StatePaths, host: str, port: int) -> ProcessSpec:
    """A Milvus Lite gRPC server owning the state dir's vector data; clients use ``http://host:port``.

    Milvus Lite's data directory can be opened by one process only, so every client (ingestion,
    evaluation, RAG services) goes through this server, as it would through Milvus in a cluster.
    It opens its data before it listens: an accepted TCP connection means ready.
    """
    argv = (
        sys.executable, "-m", "milvus_lite", "server",
        "--data-dir", str(paths.milvus_dir),
        "--host", host,
        "--port", str(port),
    )
    return ProcessSpec(
        name=VECTOR_STORE_COMPONENT,
        kind="vector-store",
        argv=argv,
        log=paths.log_file(VECTOR_STORE_COMPONENT),
        env=_child_env({}),
        ready_url=f"tcp://{host}:{port}",
    )


def with_features(spec: ProcessSpec, features_json: str, feature_store_yaml: Path) -> ProcessSpec:
    """A kserve model server that joins online features (``spec.features``) to every request."""
    argv = spec.argv + ("--features", features_json, "--feature-store-yaml", str(feature_store_yaml))
    return replace(spec, argv=argv)


def ray_app_file(paths: StatePaths, name: str) -> Path:
    """The Ray Serve application config of a ``runtime: ray`` deployment (JSON, see mlplane.rag.serve_local)."""
    return paths.root / "ray" / name / "app.json"


# Replicas report load every 2 s instead of Ray's 10 s, so local autoscaling reacts within seconds.
RAY_LOCAL_ENV = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "2",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "2",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
}


def ray_serve_process(paths: StatePaths, name: str, endpoint: Endpoint, tracking_uri: str) -> ProcessSpec:
    """A private Ray instance serving one Serve application (``python -m mlplane.rag.serve_local``)."""
    argv = (
        sys.executable, "-m", "mlplane.rag.serve_local",
        "--config", str(ray_app_file(paths, name)),
        "--host", endpoint.host,
        "--port", str(endpoint.http_port),
    )
    env = _child_env(RAY_LOCAL_ENV, tracking_uri)
    return ProcessSpec(
        name=name,
        kind="model-server",
        argv=argv,
        env=env,
        log=paths.log_file(name),
        ready_url=f"{endpoint.url}/health",
        ready_timeout_s=600.0,  # Ray, then every deployment's models
    )


@dataclass(frozen=True)
class TritonInstall:
    """Where the ``tritonserver`` distribution lives (the ``nvidia-pytriton`` wheel ships one)."""

    binary: Path  # bin/tritonserver
    python_backend: Path  # backends/python: libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # the Python-backend stub built for this interpreter's Python version
    library_path: tuple[Path, ...]  # libpython's directory, then the wheel's bundled libraries
    site_packages: tuple[Path, ...]  # mlplane's virtualenv, put on the stub's sys.path by model.py


def triton_process(paths: StatePaths, name: str, endpoint: Endpoint, tracking_uri: str, grace_period_s: int,
                   install: TritonInstall, control_key: str = "", max_request_bytes: int | None = None) -> ProcessSpec:
    """``tritonserver`` in explicit model-control mode serving ``name`` from the deployment's repository.

    HTTP, gRPC and metrics bind ``endpoint.host``; the backend directory is the deployment's own
    copy of the Python backend with the stub for this interpreter (see ``TritonRuntime.prepare``).
    Model control (and Triton's log/trace settings) answer only requests that carry
    ``TRITON_CONTROL_HEADER: control_key`` (the supervisor's per-platform secret); without a key, a
    random one nobody knows: closed to everybody. Clients infer over gRPC only
    (:data:`TRITON_HTTP_INFERENCE_CLOSED`); health, metadata, statistics and metrics stay on HTTP.
    ``max_request_bytes`` (``serving.maxRequestBytes``) reaches the Python backend, which refuses a
    request whose tensors are larger (``MLPLANE_MAX_REQUEST_BYTES``).
    """
    key = control_key or secrets.token_urlsafe(32)
    base = paths.triton_dir(name)
    argv = [
        str(install.binary),
        f"--model-repository={base / 'models'}",
        f"--backend-directory={base / 'backends'}",
        "--model-control-mode=explicit",
        f"--load-model={name}",
        "--disable-auto-complete-config",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={grace_period_s}",
        f"--http-address={endpoint.host}",
        f"--http-port={endpoint.http_port}",
    ]
    # Clients infer over gRPC; the runtime refuses a platform without it (TritonRuntime.prepare). The
    # cluster entrypoint (mlplane.triton.server) builds the same flags.
    ((_, closed_value),) = triton_http_inference_header(key).items()
    argv += restricted_api_args(key, closed_value, grpc=bool(endpoint.grpc_port))
    if endpoint.grpc_port:
        argv += [f"--grpc-address={endpoint.host}", f"--grpc-port={endpoint.grpc_port}"]
    else:
        argv.append("--allow-grpc=false")
    if endpoint.metrics_port:
        argv += ["--allow-metrics=true", f"--metrics-address={endpoint.host}",
                 f"--metrics-port={endpoint.metrics_port}"]
    else:
        argv.append("--allow-metrics=false")
    env = _child_env({
        "LD_LIBRARY_PATH": os.pathsep.join(str(p) for p in install.library_path),
        "MLPLANE_TRITON_SITE_PACKAGES": os.pathsep.join(str(p) for p in install.site_packages),
        **({"MLPLANE_MAX_REQUEST_BYTES": str(max_request_bytes)} if max_request_bytes else {}),
    }, tracking_uri)
    return ProcessSpec(
        name=name,
        kind="model-server",
        argv=tuple(argv),
        env=env,
        log=paths.log_file(name),
        ready_url=f"{endpoint.url}/v2/models/{name}/ready",
    )


# MLflow settings from the caller's shell that would point a child at another server or run.
_FOREIGN_MLFLOW_VARS = frozenset({
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
})


def process_environment(spec: ProcessSpec) -> dict[str, str]:
    """The full environment of a child: ours, minus anything pointing at another MLflow, plus its env files."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_MLFLOW_VARS}
    env.update(spec.env)
    for path in spec.env_files:
        env.update(read_env_file(path))
    return env
