"""The KEDA queries mlplane renders return the workload's value in a real Prometheus.

A real Prometheus server (Debian's `prometheus`, on 127.0.0.1) answers each rendered trigger query:

- GPU utilisation: Prometheus *scrapes* a DCGM-exporter endpoint (the exporter labels each GPU's
  series with the pod using it) with the target labels the Prometheus operator gives a
  ServiceMonitor's targets (the exporter's own namespace/pod/service), once with the stack's
  `honorLabels` and once with the upstream default, so Prometheus itself decides which `pod` label
  is stored;
- request rate, concurrency, queue depth: samples backfilled with `promtool tsdb
  create-blocks-from openmetrics`, named and labelled as the model servers export them (KServe's
  names read from the kserve package's own metrics registry, Triton's checked against a real
  tritonserver's `/metrics` in test_stack_triton_metrics.py) plus the target labels of mlplane's ServiceMonitor, so
  the expected values are exact.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from stack_helpers import stack_values, upstream_values

from mlplane.k8s import ResolvedArtifact, render
from mlplane.runtime.local.process import free_port
from mlplane.spec import ModelDeployment, Platform

ARTIFACT = ResolvedArtifact(registry_version="3", storage_uri="s3://bucket/1/abc/artifacts/model")
NAMESPACE = "ml"
# Two predictor pods of the workload, and one of another deployment whose name shares a prefix.
PODS = ["llm-predictor-7d9f8-abcde", "llm-predictor-7d9f8-fghij"]
OTHER_POD = "llm-canary-predictor-5c6b7-zzzzz"
STEP = 15  # seconds between backfilled samples (the ServiceMonitor's interval)
KSERVE_RPS, KSERVE_LATENCY = 4.0, 0.25  # per pod
TRITON_RPS, TRITON_LATENCY_US, TRITON_PENDING = 3.0, 500_000.0, 5.0


def rendered_query(runtime: str, metric: str, name: str = "llm") -> str:
    dep = ModelDeployment.model_validate({
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": "models:/llm/3", "runtime": runtime, "resources": {"gpus": 1},
                 "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "target": {"metric": metric, "value": 10}}}})
    (scaled,) = [o for o in render(dep, Platform.default(), ARTIFACT) if o["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    return trigger["metadata"]["query"]


def kserve_metric_names() -> set[str]:
    """The sample names the kserve ModelServer's /metrics exposes for predict calls (its own registry).

    In a process of its own, as the model server is: kserve's protobuf module and tritonclient's (which
    other tests import) define the same `inference.*` symbols and cannot share one process."""
    code = ("from kserve.metrics import PREDICT_HIST_TIME\nfrom prometheus_client import generate_latest\n"
            "PREDICT_HIST_TIME.labels(model_name='probe').observe(0.1)\nprint(generate_latest().decode())")
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120).stdout
    return {line.split("{")[0] for line in text.splitlines() if line.startswith("request_predict_seconds")}


# --------------------------------------------------------------------------- the samples
def target_labels(pod: str, service: str, port: str) -> dict[str, str]:
    """What the Prometheus operator attaches to a ServiceMonitor target (namespace/service/pod/...)."""
    return {"namespace": NAMESPACE, "service": service, "pod": pod, "container": "kserve-container",
            "endpoint": port, "job": service, "instance": f"10.0.0.{abs(hash(pod)) % 250}:{port}"}


def openmetrics(start: int, samples: int) -> str:
    """Linear counters and a gauge for every pod, every STEP seconds."""
    lines: list[str] = []
    families: dict[str, list[str]] = {}

    def add(name: str, labels: dict[str, str], value_at: Any) -> None:
        rendered = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        families.setdefault(name, []).extend(
            f"{name}{{{rendered}}} {value_at(i)} {start + i * STEP}" for i in range(samples))

    for pod in [*PODS, OTHER_POD]:
        svc = "llm-predictor" if pod in PODS else "llm-canary-predictor"
        kserve = {**target_labels(pod, svc, "8080"), "model_name": "llm"}
        add("request_predict_seconds_count", kserve, lambda i: 1000 + KSERVE_RPS * STEP * i)
        add("request_predict_seconds_sum", kserve, lambda i: 500 + KSERVE_RPS * KSERVE_LATENCY * STEP * i)
        triton = {**target_labels(pod, svc, "8002"), "model": "llm", "version": "1"}
        add("nv_inference_request_success", triton, lambda i: 2000 + TRITON_RPS * STEP * i)
        add("nv_inference_request_duration_us", triton,
            lambda i: 9e6 + TRITON_RPS * TRITON_LATENCY_US * STEP * i)
        add("nv_inference_pending_request_count", triton, lambda i: TRITON_PENDING)
    for name, series in families.items():  # all typed gauge: OpenMetrics counters would need _total names
        lines += [f"# TYPE {name} gauge", *series]
    return "\n".join([*lines, "# EOF", ""])


DCGM_EXPOSITION = "\n".join([
    "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
    "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    *(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{i}",UUID="GPU-{i}",device="nvidia{i}",modelName="NVIDIA L4",'
      f'Hostname="gpu-node-1",container="kserve-container",namespace="{NAMESPACE}",pod="{pod}"}} {util}'
      for i, (pod, util) in enumerate([(PODS[0], 80), (PODS[1], 90), (OTHER_POD, 10)])),
    "",
])


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = DCGM_EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def dcgm_exporter() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dcgm_job(name: str, address: str, honor_labels: bool) -> dict[str, Any]:
    """The scrape job the Prometheus operator generates from the GPU operator's DCGM ServiceMonitor."""
    return {"job_name": name, "honor_labels": honor_labels, "scrape_interval": "1s", "metrics_path": "/metrics",
            "static_configs": [{"targets": [address], "labels": {
                "namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x7k2p", "service": "nvidia-dcgm-exporter",
                "container": "nvidia-dcgm-exporter", "endpoint": "gpu-metrics", "setting": name}}]}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, dcgm_exporter: str) -> Iterator[tuple[str, int]]:
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` not found on PATH: install Debian's prometheus package (make system-deps)")
    root = tmp_path_factory.mktemp("prometheus")
    end = (int(time.time()) - 1800) // STEP * STEP  # evaluate half an hour ago: inside the default retention
    samples = 9
    start = end - (samples - 1) * STEP
    (root / "samples.om").write_text(openmetrics(start, samples), encoding="utf-8")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(root / "samples.om"),
                    str(root / "data")], check=True, capture_output=True, timeout=120)
    honor = stack_values()["gpu-operator"]["dcgmExporter"]["serviceMonitor"]["honorLabels"]
    default = upstream_values("gpu-operator")["dcgmExporter"]["serviceMonitor"]["honorLabels"]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [dcgm_job("stack", dcgm_exporter, honor),
                                 dcgm_job("upstream-default", dcgm_exporter, default)]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port("127.0.0.1")
    with (root / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={root / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--storage.tsdb.retention.time=1d"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # ready, and both DCGM jobs scraped at least once
            try:  # while it replays its TSDB, Prometheus answers 503 "Service Unavailable" (not JSON)
                r = httpx.get(f"{url}/api/v1/query", params={"query": "up == 1"}, timeout=2)
                if r.status_code == 200 and len(r.json()["data"]["result"]) == 2:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not come up: {(root / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url, end
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def query(prom: tuple[str, int], promql: str, *, at: int | None = None) -> list[dict[str, Any]]:
    url, _ = prom
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = at
    body = httpx.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


# --------------------------------------------------------------------------- the tests
def test_the_gpu_query_reads_the_workloads_utilisation(prometheus: tuple[str, int]) -> None:
    promql = rendered_query("triton", "gpu-utilization")
    assert 'DCGM_FI_DEV_GPU_UTIL{namespace="ml",pod=~"llm-predictor-.*"}' in promql
    # Only the stack-scraped job can match: scope the rendered query to it by its target label.
    scoped = promql.replace('{namespace="ml",', '{setting="stack",namespace="ml",')
    assert value(query(prometheus, scoped)) == pytest.approx(85.0)  # mean of the workload's two GPUs, not 10


def test_with_the_upstream_default_the_same_query_finds_nothing(prometheus: tuple[str, int]) -> None:
    """Why the stack sets honorLabels: by default the workload's pod is only in exported_pod."""
    scoped = rendered_query("triton", "gpu-utilization").replace('{namespace="ml",', '{setting="upstream-default",'
                                                                  'namespace="ml",')
    assert query(prometheus, scoped) == []
    stored = query(prometheus, f'DCGM_FI_DEV_GPU_UTIL{{setting="upstream-default",exported_pod="{PODS[0]}"}}')
    assert [r["metric"]["pod"] for r in stored] == ["nvidia-dcgm-exporter-x7k2p"]
    assert stored[0]["metric"]["exported_namespace"] == NAMESPACE


def test_the_kserve_query_names_are_what_the_model_server_exports() -> None:
    names = kserve_metric_names()
    for metric in ("rps", "concurrency", "queue-depth"):
        used = {n for n in names if n in rendered_query("kserve", metric)}
        assert used, f"{metric}: {rendered_query('kserve', metric)} uses none of {sorted(names)}"


@pytest.mark.parametrize(("runtime", "metric", "expected"), [
    ("kserve", "rps", 2 * KSERVE_RPS),
    ("kserve", "concurrency", 2 * KSERVE_RPS * KSERVE_LATENCY),  # Little's law: requests in flight
    ("kserve", "queue-depth", 2 * KSERVE_RPS * KSERVE_LATENCY),
    ("triton", "rps", 2 * TRITON_RPS),
    ("triton", "concurrency", 2 * TRITON_RPS * TRITON_LATENCY_US / 1e6),
    ("triton", "queue-depth", 2 * TRITON_PENDING),
])
def test_request_queries_return_the_workloads_value(prometheus: tuple[str, int], runtime: str, metric: str,
                                                    expected: float) -> None:
    """Summed over the workload's two pods (KEDA's AverageValue divides by replicas); the other
    deployment's pod, whose name shares the prefix `llm-`, is not counted."""
    _, end = prometheus
    assert value(query(prometheus, rendered_query(runtime, metric), at=end)) == pytest.approx(expected, rel=1e-6)


def test_the_query_of_another_name_finds_nothing(prometheus: tuple[str, int]) -> None:
    _, end = prometheus
    assert query(prometheus, rendered_query("kserve", "rps", name="nobody"), at=end) == []
