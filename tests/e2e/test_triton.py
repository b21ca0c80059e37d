"""End to end: `runtime: triton` on a real platform: a real tritonserver (Python backend) and MLflow.

The deployment is driven through the `mlplane` CLI; requests go over HTTP and gRPC with
tritonclient; dynamic batching is observed in Triton's own statistics; promotion runs under a
concurrent client loop; a SIGKILLed tritonserver comes back; a model Triton cannot express is
refused at deploy time without leaving a server behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import httpx
import mlflow
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from platform_helpers import mlplane, platform_processes, promote_under_load, status, wait_for
from tritonclient.utils import InferenceServerException

from mlplane_pipelines.iris import FEATURES, train_and_register

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "iris"))
from client import SAMPLES, infer_grpc, infer_http  # noqa: E402

from mlplane.registry import tracking as tracking_uris  # noqa: E402
from mlplane.runtime.local.plan import TRITON_HTTP_INFERENCE_CLOSED  # noqa: E402

pytestmark = pytest.mark.e2e

PLAIN = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {name: plain}
spec: {model: 'models:/iris/1', runtime: triton}
"""
DEPLOYMENT = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {name: iris}
spec:
  model: models:/iris@champion
  runtime: triton
  batching: {maxBatchSize: 32, maxLatencyMs: 5, preferredBatchSizes: [16, 32]}
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("triton") / ".mlplane"
    mlplane(state_dir, "up", "-f", str(ROOT / "examples" / "iris" / "platform.yaml"))
    tracking = status(state_dir)["trackingUri"]
    v1 = train_and_register(tracking, name="iris", C=1.0, alias="champion")
    v2 = train_and_register(tracking, name="iris", C=0.02)
    deployment = state_dir.parent / "deployment.yaml"
    deployment.write_text(DEPLOYMENT)
    plain = state_dir.parent / "plain.yaml"
    plain.write_text(PLAIN)
    yield {"dir": state_dir, "tracking": tracking, "v1": v1, "v2": v2, "deployment": deployment, "plain": plain}
    mlplane(state_dir, "down", check=False)


def _expected(tracking: str, version: str, rows: np.ndarray) -> list[int]:
    """What the pyfunc itself predicts, loaded in this process."""
    import pandas as pd

    with tracking_uris(tracking):  # models:/ resolves through the registry URI, restored afterwards
        model = mlflow.pyfunc.load_model(f"models:/iris/{version}")
    return [int(v) for v in np.asarray(model.predict(pd.DataFrame(rows, columns=FEATURES))).ravel()]


def _http(dep: dict) -> str:
    return dep["url"].removeprefix("http://")


def infer_batched(dep: dict, rows: np.ndarray, proto: str = "grpc") -> tuple[list[int], str]:
    """A request to a batching Triton deployment: columns are [n, 1] (see mlplane.triton.repository)."""
    lib = httpclient if proto == "http" else grpcclient
    client = lib.InferenceServerClient(url=_http(dep) if proto == "http" else dep["grpc"])
    inputs = []
    for i, name in enumerate(FEATURES):
        inp = lib.InferInput(name, [len(rows), 1], "FP64")
        inp.set_data_from_numpy(np.ascontiguousarray(rows[:, i : i + 1]))
        inputs.append(inp)
    result = client.infer("iris", inputs)
    response = result.get_response()
    version = response["model_version"] if proto == "http" else response.model_version
    out = result.as_numpy("output-0")
    assert out.shape == (len(rows), 1)
    return out.ravel().tolist(), version


def _http_inference_is_closed(dep: dict, name: str) -> None:
    """Clients infer over gRPC: Triton 2.51's HTTP inference front end can be crashed by one request."""
    with pytest.raises(InferenceServerException, match=TRITON_HTTP_INFERENCE_CLOSED):
        infer_http(_http(dep), name, SAMPLES)


def test_triton_deployment_serves_over_http_and_grpc(platform):
    state_dir = platform["dir"]
    mlplane(state_dir, "deploy", "-f", str(platform["deployment"]))
    dep = status(state_dir)["deployments"]["iris"]
    assert dep["status"] == "ready" and dep["runtime"] == "triton" and dep["servedVersion"] == "1"
    assert dep["metrics"].startswith("http://127.0.0.1:") and dep["metrics"].endswith("/metrics")
    assert dep["metrics"] in mlplane(state_dir, "status").stdout
    assert (state_dir / "triton" / "iris" / "models" / "iris" / "config.pbtxt").exists()

    meta = httpx.get(f"{dep['url']}/v2/models/iris").json()
    assert meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    # Batched column inputs are dims [1] reshaped to [] (see triton_repo): Triton reports [-1, 1], takes [n].
    assert all(i["datatype"] == "FP64" and i["shape"] == [-1, 1] for i in meta["inputs"]), meta

    expected = _expected(platform["tracking"], "1", SAMPLES)
    grpc_classes, grpc_version = infer_batched(dep, SAMPLES, "grpc")
    assert grpc_version == "1"
    assert grpc_classes == expected == [0, 1, 2]
    _http_inference_is_closed(dep, "iris")
    assert "nv_inference_request_success" in httpx.get(dep["metrics"]).text


def test_without_batching_clients_send_what_the_kserve_runtime_takes(platform):
    state_dir = platform["dir"]
    mlplane(state_dir, "deploy", "-f", str(platform["plain"]))
    dep = status(state_dir)["deployments"]["plain"]
    meta = httpx.get(f"{dep['url']}/v2/models/plain").json()
    assert all(i["shape"] == [-1] for i in meta["inputs"]) and meta["outputs"][0]["shape"] == [-1]
    # The example gRPC client of the kserve runtime, unchanged (HTTP inference: see docs/triton-limits.md).
    grpc_classes, grpc_version = infer_grpc(dep["grpc"], "plain", SAMPLES)
    assert grpc_version == "1"
    assert grpc_classes.tolist() == _expected(platform["tracking"], "1", SAMPLES)
    _http_inference_is_closed(dep, "plain")
    mlplane(state_dir, "undeploy", "plain")


def test_dynamic_batching_combines_concurrent_requests(platform):
    dep = status(platform["dir"])["deployments"]["iris"]
    stop = threading.Event()
    errors: list[str] = []

    def one_row_requests() -> None:
        while not stop.is_set():
            try:
                infer_batched(dep, SAMPLES[:1])
            except Exception as exc:  # every failure counts
                errors.append(repr(exc))

    threads = [threading.Thread(target=one_row_requests) for _ in range(16)]
    for t in threads:
        t.start()
    try:
        def batched() -> bool:
            stats = httpx.get(f"{dep['url']}/v2/models/iris/stats").json()["model_stats"][0]
            return any(int(b["batch_size"]) > 1 for b in stats["batch_stats"])
        wait_for(batched, 20, "a batch of more than one request in Triton's statistics")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []


def test_promote_switches_triton_version_with_zero_failed_requests(platform):
    state_dir = platform["dir"]
    dep = status(state_dir)["deployments"]["iris"]
    out, results = promote_under_load(state_dir, "iris", platform["v2"].version,
                                      lambda proto: infer_batched(dep, SAMPLES, proto)[1], protocols=("grpc",) * 4)
    assert "1 → 2" in out.stdout
    assert results["errors"] == []
    assert results["versions"][0] == "1" and results["versions"][-1] == "2"
    assert len(results["versions"]) > 20
    after = status(state_dir)["deployments"]["iris"]
    assert after["servedVersion"] == "2" and after["url"] == dep["url"] and after["pid"] == dep["pid"]
    assert httpx.get(f"{dep['url']}/v2/models/iris").json()["versions"] == ["2"]
    classes, version = infer_batched(dep, SAMPLES, "grpc")
    assert version == "2" and classes == _expected(platform["tracking"], "2", SAMPLES)


def test_killed_tritonserver_is_restarted(platform):
    state_dir = platform["dir"]
    dep = status(state_dir)["deployments"]["iris"]
    expected, _ = infer_batched(dep, SAMPLES)
    stubs = psutil.Process(dep["pid"]).children(recursive=True)
    assert stubs
    os.kill(dep["pid"], signal.SIGKILL)
    back = wait_for(lambda: (d := status(state_dir)["deployments"]["iris"])["status"] == "ready"
                    and d["pid"] != dep["pid"] and d, 90, "tritonserver to come back")
    assert back["restarts"] == 1 and back["url"] == dep["url"] and back["metrics"] == dep["metrics"]
    # The killed server's Python-backend stubs do not outlive it.
    assert [p for p in stubs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    classes, version = infer_batched(back, SAMPLES, "grpc")
    assert version == "2" and classes == expected


def test_a_model_triton_cannot_express_is_refused_at_deploy_time(platform):
    from sklearn.linear_model import LogisticRegression

    from mlplane_pipelines.iris import load_data

    X, y = load_data()
    with tracking_uris(platform["tracking"]), mlflow.start_run():
        mlflow.sklearn.log_model(LogisticRegression(max_iter=200).fit(X, y), name="model",
                                 registered_model_name="unsigned", pip_requirements=["scikit-learn"])
    state_dir = platform["dir"]
    out = mlplane(state_dir, "deploy", "unsigned", "--model", "models:/unsigned/1", "--runtime", "triton",
                  check=False)
    assert out.returncode == 2, out.stderr
    assert "no input signature" in out.stderr and "runtime: kserve" in out.stderr
    assert "unsigned" not in status(state_dir)["deployments"]
    assert not [p for p in psutil.process_iter(["cmdline"])
                if "--load-model=unsigned" in " ".join(p.info["cmdline"] or [])]
    # The served deployment is untouched.
    assert infer_batched(status(state_dir)["deployments"]["iris"], SAMPLES)[1] == "2"


def test_down_leaves_no_triton_process(platform):
    state_dir = platform["dir"]
    pid = status(state_dir)["deployments"]["iris"]["pid"]
    stubs = psutil.Process(pid).children(recursive=True)
    assert stubs, "the Python backend runs the model in stub processes"
    mlplane(state_dir, "undeploy", "iris")
    assert not (state_dir / "triton" / "iris").exists()
    mlplane(state_dir, "down")
    assert [p for p in stubs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert platform_processes(state_dir) == []
