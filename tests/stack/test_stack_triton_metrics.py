"""The Triton metrics mlplane's KEDA queries use are what a real tritonserver exports, with those labels.

Starts the tritonserver of the nvidia-pytriton wheel (the Python backend, a one-line identity model)
on 127.0.0.1, sends it one request and reads its metrics endpoint (8002 in the pods, scraped by the
ServiceMonitor mlplane renders). test_stack_prometheus.py then evaluates the queries on samples of
these names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from test_stack_prometheus import rendered_query

from mlplane.runtime.local.process import free_port
from mlplane.runtime.local.runtimes import find_triton

CONFIG = """name: "m"
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""
MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
                for r in requests]
"""


@pytest.fixture(scope="module")
def triton_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    install = find_triton()
    root = tmp_path_factory.mktemp("triton")
    (root / "models" / "m" / "1").mkdir(parents=True)
    (root / "models" / "m" / "config.pbtxt").write_text(CONFIG, encoding="utf-8")
    (root / "models" / "m" / "1" / "model.py").write_text(MODEL, encoding="utf-8")
    shutil.copytree(install.python_backend, root / "backends" / "python")
    shutil.copy2(install.stub, root / "backends" / "python" / install.stub.name)
    http_port, metrics_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(str(p) for p in install.library_path)}
    log = (root / "triton.log").open("wb")
    proc = subprocess.Popen([str(install.binary), f"--model-repository={root / 'models'}",
                             f"--backend-directory={root / 'backends'}", "--http-address=127.0.0.1",
                             f"--http-port={http_port}", "--allow-grpc=false", "--allow-gpu-metrics=false",
                             "--allow-metrics=true", "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/v2/models/m/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tritonserver did not get ready: {(root / 'triton.log').read_text()[-2000:]}")
            time.sleep(0.3)
        httpx.post(f"{base}/v2/models/m/infer", timeout=30,
                   json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
        yield httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        os.killpg(proc.pid, 15)  # the server and its Python-backend stub
        proc.wait(timeout=60)
        log.close()


@pytest.mark.parametrize("metric", ["rps", "concurrency", "queue-depth"])
def test_every_triton_query_uses_metrics_tritonserver_exports(triton_metrics: str, metric: str) -> None:
    promql = rendered_query("triton", metric)
    exported = {line.split("{")[0]: line for line in triton_metrics.splitlines()
                if line.startswith("nv_inference") and 'model="m"' in line}
    used = [name for name in exported if f"{name}{{" in promql]
    assert used, f"{promql} uses none of {sorted(exported)}"
    for name in used:  # per model and version; pod/namespace come from the scrape's target labels
        assert 'version="1"' in exported[name]
