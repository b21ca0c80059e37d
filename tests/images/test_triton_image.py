"""The mlplane-triton image, built here offline, runs the chart's Triton container (issue 13, cluster runtime).

images/mlplane-triton.Containerfile is built like the other images (image_builder: a debootstrap Debian
standing in for python:3.11-slim-bookworm, uv.lock's `triton` extra — tritonserver 2.51 from the
nvidia-pytriton wheel — installed from this machine's uv cache). In it runs the container KServe 0.20
builds for a `runtime: triton` deployment: the chart's ClusterServingRuntime `mlplane-triton` merged with
the InferenceService mlplane renders (tests/charts/triton_cluster.py). Its command and args exactly, the
env the pod gets (the InferenceService's MLPLANE_MAX_REQUEST_BYTES), as the chart's UID/GID 1000, with
the file system the pod gets: /mnt/models is what the storage initializer downloads for the rendered
storageUri (the cluster repository with the MLflow iris model inside, read-only), each emptyDir the
runtime mounts is an empty directory, and, the root file system being read-only
(readOnlyRootFilesystem), /tmp is read-only unless the runtime mounts a volume there. Triton's Python
backend creates /tmp/python_env_* as it starts and aborts when it cannot.

Nothing is rewritten: inside `buildah run` the network is the test's, so Triton binds the chart's ports
8000/8001/8002 on every address there, as in the pod's own network namespace. `make test` and `make
image-test` run the tests in a private network namespace (loopback only), where those ports are free.

Then, against that process: the readiness probe passes once the model loaded; a request at the
ISVC's maxRequestBytes crosses the Python backend's shared memory (/dev/shm: the chart's memory-backed
emptyDir, where a pod's own is a 64 MiB tmpfs); gRPC inference of iris rows answers their classes;
HTTP inference and HTTP model control answer 403; a request over serving.maxRequestBytes is refused;
and nothing in the image's file system outside /tmp changed (what the pod's read-only root file system
requires).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import image_builder as buildah
import numpy as np
import pandas as pd
import psutil
import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _helpers in (_TESTS / "security", _TESTS / "charts", _TESTS / "k8s"):  # chart_helpers needs k8s_schema_helpers
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

import mlflow.sklearn  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from triton_attacks import (  # noqa: E402
    FEATURES,
    MODEL,
    Server,
    cluster_model_repository,
    grpc_infer,
    grpc_over_max_request_bytes_is_refused,
    http_inference_is_refused,
    tree_rss,
    wait_until_ready,
)
from triton_cluster import predictor_container, triton_isvc, triton_runtime  # noqa: E402

from mlplane.triton.args import TRITON_CONTROL_HEADER  # noqa: E402

# The first test builds the image (minutes on a cold cache) and waits for the model to load.
pytestmark = pytest.mark.timeout(3600)

MODEL_DIR = "/mnt/models"  # where KServe's storage initializer leaves the storageUri's files
# Large enough that a request at the limit and its reply (80 MiB) do not fit in a pod's own /dev/shm.
MAX_REQUEST_BYTES = 64 << 20
SITE_PACKAGES = "/prod_venv/lib/python3.11/site-packages"


@pytest.fixture(scope="module")
def triton_image() -> str:
    return buildah.build("mlplane-triton")


@pytest.fixture(scope="module")
def runtime() -> dict:
    return triton_runtime()


@pytest.fixture(scope="module")
def container(runtime: dict) -> dict:
    return predictor_container(runtime, triton_isvc(MODEL, max_request_bytes=MAX_REQUEST_BYTES))


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _env(container: dict) -> dict[str, str]:
    env = {}
    for item in container.get("env", []):
        if "value" not in item:
            raise AssertionError(f"the test cannot provide env {item} of {container['name']}")
        env[item["name"]] = item["value"]
    return env


def _iris_rows() -> tuple[dict[str, np.ndarray], list[int]]:
    """Three iris rows, one of each class, as FP64 columns; and the classes."""
    iris = load_iris()
    rows = [0, 60, 120]
    return {name: iris.data[rows, i].astype(np.float64) for i, name in enumerate(FEATURES)}, iris.target[rows].tolist()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, triton_image: str, runtime: dict,
           container: dict) -> Iterator[dict]:
    """The chart's container running in the image until the module's tests are done."""
    root = tmp_path_factory.mktemp("triton-image")
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"] and security["runAsUser"] == 1000
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    busy = [port for port in ports.values() if _port_in_use(port)]
    assert not busy, (f"ports {busy} are in use here, and the chart's Triton binds them: run the image tests in a "
                      "private network namespace, as `make test` and `make image-test` do (or /tmp/lo.sh)")
    repository = cluster_model_repository(root)
    argv = [*container["command"], *container["args"]]
    assert f"--model-store={MODEL_DIR}" in argv
    env = _env(container)
    assert env["MLPLANE_MAX_REQUEST_BYTES"] == str(MAX_REQUEST_BYTES)

    mounts, shm_size = buildah.pod_mounts(runtime, container, root, {MODEL_DIR: repository})
    with buildah.container(triton_image) as ctr:
        marker = root / "started"
        marker.touch()
        time.sleep(1.1)  # file times have a resolution: a change in this second must count as after it
        log_path = root / "triton.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                buildah.run_argv(ctr, argv, env=env, user=f"{security['runAsUser']}:{security['runAsGroup']}",
                                 mounts=mounts, shm_size=shm_size),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            http = f"http://127.0.0.1:{ports['http1']}"
            server = Server(proc, http, f"127.0.0.1:{ports['grpc']}", f"http://127.0.0.1:{ports['metrics']}/metrics",
                            log_path)
            wait_until_ready(proc, f"{http}/v2/health/ready", log_path, what="the image's Triton")
            server.baseline = tree_rss(proc.pid)
            yield {"server": server, "ctr": ctr, "marker": marker, "ports": ports, "repository": repository}
        finally:
            buildah.stop(proc)


def _processes(server: Server) -> dict[str, psutil.Process]:
    """The processes `buildah run` started, by the name of the program each runs (tritonserver, the stub)."""
    return {Path(p.cmdline()[0]).name: p for p in psutil.Process(server.proc.pid).children(recursive=True)
            if p.cmdline()}


def test_the_image_is_the_one_the_chart_runs(triton_image: str, container: dict) -> None:
    config = buildah.image_config(triton_image)["OCIv1"]["config"]
    assert config["Entrypoint"] == container["command"] == ["python", "-m", "mlplane.triton.server"]
    assert config["User"] == "1000:1000"
    assert {"HOME=/tmp", f"MLPLANE_TRITON_SITE_PACKAGES={SITE_PACKAGES}"} <= set(config["Env"])
    assert {"8000/tcp", "8001/tcp", "8002/tcp"} <= set(config["ExposedPorts"])
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "mlplane-triton"
    assert labels["org.opencontainers.image.source"] == "https://github.com/mlplane/mlplane"


def test_the_readiness_probe_passes_once_the_model_loaded_from_mnt_models(served: dict, container: dict) -> None:
    server = served["server"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert httpx.get(f"http://127.0.0.1:{get['port']}{get['path']}", timeout=10).status_code == 200, probe
    meta = httpx.get(f"{server.http_url}/v2/models/{MODEL}", timeout=10).json()
    assert [i["name"] for i in meta["inputs"]] == FEATURES and meta["versions"] == ["1"]
    # The entrypoint exec'd the image's tritonserver, which runs the image's 3.11 stub, all as UID 1000.
    procs = _processes(server)
    triton, stub = procs["tritonserver"], procs["triton_python_backend_stub"]
    assert triton.cmdline()[0] == "/usr/local/bin/tritonserver"
    assert stub.cmdline()[0] == "/opt/tritonserver/backends/python/triton_python_backend_stub"
    assert {triton.uids().real, stub.uids().real, triton.gids().real} == {1000}
    # On every address of the pod's network, so the kubelet's probes and KServe's Service reach it.
    listening = {c.laddr.port: c.laddr.ip for c in triton.connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    for port in served["ports"].values():
        assert listening.get(port) in ("0.0.0.0", "::"), (port, listening)


def test_a_request_at_max_request_bytes_crosses_the_shared_memory(served: dict, container: dict) -> None:
    """Triton's Python backend hands every request's and reply's tensors to the model's stub through /dev/shm.
    A pod's own is 64 MiB; the chart mounts a memory-backed emptyDir of `serving.triton.shmSize` there, so a
    request at the ISVC's maxRequestBytes (64 MiB of iris rows) and its reply (16 MiB of classes) are served.
    Runs first: the pool stays grown, so the later tests measure the server's memory from here."""
    assert "/dev/shm" in [m["mountPath"] for m in container["volumeMounts"]]
    server = served["server"]
    rows = MAX_REQUEST_BYTES // 8 // len(FEATURES)
    classes, _ = grpc_infer(server.grpc, rows=rows, timeout=300)
    assert len(classes) == rows and set(classes) <= {0, 1, 2}
    server.baseline = tree_rss(server.proc.pid)
    # Requests of this size are legitimate here, and Triton keeps what they took: a request over the limit
    # (twice it, a later test) is read whole, parsed and copied into the shared-memory pool before the backend
    # refuses it (docs/triton-limits.md), the pool stays grown and tritonserver's allocator keeps freed memory
    # (measured: ~550 MiB after that test). Bounded by a few times the request, not by what a client asks for.
    server.growth += 8 * MAX_REQUEST_BYTES
    server.still_serving()


def test_grpc_inference_answers_the_iris_classes(served: dict) -> None:
    columns, classes = _iris_rows()
    inputs = []
    for name, data in columns.items():
        inp = grpcclient.InferInput(name, [len(data)], "FP64")
        inp.set_data_from_numpy(data)
        inputs.append(inp)
    result = grpcclient.InferenceServerClient(served["server"].grpc).infer(MODEL, inputs, client_timeout=60)
    answer = result.as_numpy("output-0").ravel().tolist()
    model = mlflow.sklearn.load_model(str(served["repository"] / MODEL / "1" / "model"))
    assert answer == classes == model.predict(pd.DataFrame(columns)).tolist() == [0, 1, 2]
    assert result.get_response().model_version == "1"


def test_http_inference_is_refused(served: dict) -> None:
    columns, _ = _iris_rows()
    body = httpx.Request("POST", "http://x", json={
        "inputs": [{"name": name, "shape": [len(data)], "datatype": "FP64", "data": data.tolist()}
                   for name, data in columns.items()]}).content
    http_inference_is_refused(served["server"], body)


@pytest.mark.parametrize("path", [f"/v2/repository/models/{MODEL}/load", f"/v2/repository/models/{MODEL}/unload",
                                  "/v2/repository/index"])
def test_http_model_control_is_refused(served: dict, path: str) -> None:
    server = served["server"]
    answer = httpx.post(f"{server.http_url}{path}", json={}, timeout=60)
    assert answer.status_code == 403 and TRITON_CONTROL_HEADER in answer.json()["error"], answer.text
    server.still_serving()


def test_a_request_over_the_isvcs_max_request_bytes_is_refused(served: dict) -> None:
    grpc_over_max_request_bytes_is_refused(served["server"], MAX_REQUEST_BYTES)


def test_nothing_outside_tmp_changed(served: dict) -> None:
    """readOnlyRootFilesystem: the server loaded the model and served; the image's files are as built."""
    served["server"].still_serving()
    assert buildah.changed_outside_tmp(served["ctr"], served["marker"]) == []
