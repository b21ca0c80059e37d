"""Benchmark: `runtime: triton` on a real platform: overhead vs bare Triton, dynamic batching, Triton vs
kserve, binary tensors.

    .venv/bin/python bench/triton.py [--rounds 3] [--trivial-rounds 5] [--seconds 2.5]
        [--load-generator auto|perf_analyzer|python] [--trivial-only]

Starts a platform (``mlplane up`` in a temporary state dir). Triton's HTTP inference API is closed to
clients (they infer over gRPC, docs/triton-limits.md): the HTTP rows send the header that opens it, which
only the platform's owner can derive (``triton_http_inference_header`` of the platform's control key), so
they measure Triton's HTTP path plus its header check. Registers the iris model, an identity pyfunc
with a tensor signature FP32 ``[-1, 262144]`` (1 MiB per row) and the trivial model (``INPUT0`` FP32
``[-1, 4]`` -> ``OUTPUT0 = INPUT0 + 1``, a pyfunc), and deploys:

* ``add-t`` / ``add-tb``: the trivial model on triton without / with ``spec.batching``
  (maxBatchSize 32, preferred 8/16, 1 ms);
* ``iris-tb``: iris on triton with ``spec.batching`` (maxBatchSize 32, preferred 8/16, 2 ms),
* ``iris-t``: iris on triton without batching, ``iris-k``: iris on kserve,
* ``ident-t`` / ``ident-k``: the identity model on triton / kserve.

Next to the platforms it starts the baseline: a bare ``tritonserver`` (the same binary and Python
backend, the same serving flags) per model, serving a hand-written Python-backend model that does the same
numpy work (``OUTPUT0 = INPUT0 + 1``), without and with the same dynamic batching (``bare`` /
``bare-b``). Trivial model, in rounds that alternate mlplane and bare: p50 at 1 connection and
throughput at 8 connections over HTTP and gRPC, and throughput at 16 and 32 gRPC clients with vs
without dynamic batching. These rows are measured by Triton's ``perf_analyzer`` (C++, one thread per client;
bench/perf_analyzer.py finds or installs it) when it is there (``--load-generator auto``, the default)
or asked for (``perf_analyzer``, which installs it into ~/.cache/mlplane-bench when missing), else by
tritonclient (``python``: one client per thread, which saturates a 2-core machine before bare Triton does).

Measures, with tritonclient.http (one client per thread, one-row iris requests), in rounds that
alternate the deployments: throughput at 16 clients with vs without dynamic batching (plus the batch
sizes Triton's ``/v2/models/<name>/stats`` counted), Triton vs kserve (p50 at 1 connection,
throughput at 8 and 16), and a 1 MiB FP32 request+reply with the binary tensor extension vs JSON on
both runtimes. Writes the tables to bench/RESULTS.md under ``## Triton: runtimes, dynamic batching,
binary tensors`` (other sections are kept). Always runs ``mlplane down`` and stops the bare servers.
``--trivial-only`` deploys only ``add-t`` / ``add-tb``, prints the mlplane vs bare table and writes nothing
(a quick loop while profiling the backend).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from _results import Report, run_context, write_section
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import triton_http_inference_header
from mlplane.runtime.local.process import free_port
from mlplane.runtime.local.runtimes import find_triton
from perf_analyzer import VERSION as PERF_ANALYZER_VERSION
from perf_analyzer import Measurement, PerfAnalyzer, PerfAnalyzerMissing, find_perf_analyzer, install

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTION = "## Triton: runtimes, dynamic batching, binary tensors"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.9, 3.0, 5.1, 1.8]
WIDTH = 262144  # FP32 values per row: 1 MiB
PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: bench-triton}
spec:
  tracking: {mode: embedded}
  serving: {host: 127.0.0.1, grpc: true, maxRequestBytes: 67108864}
"""
DEPLOYMENT = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  model: 'models:/{model}/1'
  runtime: {runtime}
{extra}"""
BATCHING = "  batching: {maxBatchSize: 32, preferredBatchSizes: [8, 16], maxLatencyMs: 2}\n"
ADD_BATCHING = "  batching: {maxBatchSize: 32, preferredBatchSizes: [8, 16], maxLatencyMs: 1}\n"
DEPLOYMENTS = {  # name: (model, runtime, batching)
    "add-t": ("add", "triton", None),
    "add-tb": ("add", "triton", ADD_BATCHING),
    "iris-tb": ("iris", "triton", BATCHING),
    "iris-t": ("iris", "triton", None),
    "iris-k": ("iris", "kserve", None),
    "ident-t": ("identity", "triton", None),
    "ident-k": ("identity", "kserve", None),
}
#: Sent on HTTP inference requests to mlplane's Triton deployments (set once the platform is up).
TRITON_HTTP: dict[str, str] = {}


def triton_http(wanted: bool) -> dict[str, str] | None:
    """A fresh copy of :data:`TRITON_HTTP` per request: tritonclient's HTTP ``infer`` writes
    ``Inference-Header-Content-Length`` into the dict it is given, so a shared one would carry a binary
    request's JSON length into the next JSON request (Triton then parses only that many bytes: 500)."""
    return dict(TRITON_HTTP) if wanted else None
ADD_ROW = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
# The bare baseline: what a Triton user writes for the trivial model. The two preambles are not per
# request: numpy comes from this virtualenv (the backend stub ignores PYTHONPATH), and the message
# numpy 2 prints for every DLPack capsule the stub takes is dropped as mlplane's backend drops it
# (printing it costs more than the model; a quieter baseline is the stricter one).
BARE_MODEL_PY = """\
import os
import site
import sys

before = list(sys.path)
for directory in os.environ["BARE_SITE_PACKAGES"].split(os.pathsep):
    site.addsitedir(directory)
sys.path[:] = sys.path[len(before):] + before

_hook = sys.unraisablehook
sys.unraisablehook = lambda u: None if "PyCapsule_GetPointer" in str(u.exc_value) else _hook(u)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT0"))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("OUTPUT0", x + 1)]))
        return responses
"""


def mlplane(state_dir: Path, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "mlplane", *args], text=True, capture_output=True,
                          timeout=timeout, env={**os.environ, "MLPLANE_STATE_DIR": str(state_dir),
                                                "COLUMNS": "200"})
    if proc.returncode != 0:
        raise RuntimeError(f"mlplane {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def register_identity(tracking: str) -> None:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    class Identity(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            # The identity: a view of the input (the Triton backend copies read-only outputs for DLPack).
            return np.asarray(model_input, dtype=np.float32)

    spec = Schema([TensorSpec(np.dtype(np.float32), (-1, WIDTH))])
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    mlflow.set_experiment("bench-identity")
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Identity(), pip_requirements=["numpy"],
                                signature=ModelSignature(inputs=spec, outputs=spec),
                                registered_model_name="identity")


def register_add(tracking: str) -> None:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    class Add(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["INPUT0"] + 1

    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "INPUT0")])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "OUTPUT0")])
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    mlflow.set_experiment("bench-add")
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Add(), pip_requirements=["numpy"],
                                signature=ModelSignature(inputs=inputs, outputs=outputs), registered_model_name="add")


class BareTriton:
    """A bare ``tritonserver`` serving the hand-written trivial model as ``name`` (the baseline)."""

    def __init__(self, root: Path, name: str, batched: bool) -> None:
        install = find_triton()
        self.name, self.dir = name, root / name
        models, backend = self.dir / "models", self.dir / "backends" / "python"
        (models / name / "1").mkdir(parents=True)
        backend.mkdir(parents=True)
        for src in (install.python_backend / "libtriton_python.so",
                    install.python_backend / "triton_python_backend_utils.py", install.stub):
            shutil.copy2(src, backend / src.name)
        dims = "[ 4 ]" if batched else "[ -1, 4 ]"
        config = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {32 if batched else 0}",
                  f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }} ]',
                  f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims} }} ]',
                  "instance_group [ { count: 1 kind: KIND_CPU } ]"]
        if batched:  # what mlplane writes for ADD_BATCHING
            config.append("dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 1000 }")
        (models / name / "config.pbtxt").write_text("\n".join(config) + "\n")
        (models / name / "1" / "model.py").write_text(BARE_MODEL_PY)
        http, grpc, metrics = free_port(), free_port(), free_port()
        self.url, self.grpc = f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        argv = [str(install.binary), f"--model-repository={models}", f"--backend-directory={backend.parent}",
                "--model-control-mode=explicit", f"--load-model={name}", "--disable-auto-complete-config",
                "--strict-readiness=true", "--exit-on-error=true", "--http-address=127.0.0.1",
                f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--allow-metrics=true",
                "--metrics-address=127.0.0.1", f"--metrics-port={metrics}"]
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(str(p) for p in install.library_path),
               "BARE_SITE_PACKAGES": os.pathsep.join(str(p) for p in install.site_packages)}
        self.log = self.dir / "tritonserver.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bare tritonserver {self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://{self.url}/v2/models/{self.name}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"bare tritonserver {self.name} not ready after {timeout:.0f}s")

    def stop(self) -> None:
        """SIGTERM to the server's process group (the server and its backend stubs)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# -- requests ------------------------------------------------------------------------------------
def iris_inputs(batched: bool) -> list:
    inputs = []
    for name, value in zip(FEATURES, ROW, strict=True):
        shape = [1, 1] if batched else [1]
        inp = httpclient.InferInput(name, shape, "FP64")
        inp.set_data_from_numpy(np.full(shape, value, dtype=np.float64))
        inputs.append(inp)
    return inputs


class Target:
    def __init__(self, name: str, dep: dict, batched: bool) -> None:
        self.name, self.url, self.batched = name, dep["url"].removeprefix("http://"), batched
        self.inputs = iris_inputs(batched)
        self.triton = dep["runtime"] == "triton"

    def client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(url=self.url, connection_timeout=30, network_timeout=60)

    def infer(self, client: httpclient.InferenceServerClient) -> None:
        out = client.infer(self.name, self.inputs, headers=triton_http(self.triton)).as_numpy("output-0")
        if out is None or out.size != 1:
            raise RuntimeError(f"{self.name}: unexpected output {out!r}")


class AddTarget:
    """The trivial model (``name`` on the server at ``url`` / ``grpc``) over one protocol."""

    def __init__(self, label: str, name: str, url: str, grpc: str, proto: str) -> None:
        self.label, self.model, self.proto = label, name, proto
        self.role = "bare" if label.startswith("bare") else "add-t"
        self.triton = proto == "http" and self.role != "bare"
        self.name = f"{label} ({proto})"
        self.lib = httpclient if proto == "http" else grpcclient
        self.address = url if proto == "http" else grpc
        inp = self.lib.InferInput("INPUT0", list(ADD_ROW.shape), "FP32")
        inp.set_data_from_numpy(ADD_ROW)
        self.inputs = [inp]

    def client(self):
        if self.proto == "http":
            return httpclient.InferenceServerClient(url=self.address, connection_timeout=30, network_timeout=60)
        return grpcclient.InferenceServerClient(url=self.address)

    def infer(self, client) -> None:
        out = client.infer(self.model, self.inputs, headers=triton_http(self.triton)).as_numpy("OUTPUT0")
        if out is None or not np.array_equal(out, ADD_ROW + 1):
            raise RuntimeError(f"{self.name}: unexpected output {out!r}")

    def perf_analyzer(self, pa: PerfAnalyzer, concurrency: int, seconds: float, input_data: Path) -> Measurement:
        """The same request from perf_analyzer: ``[1, 4]`` (the batched models' dims are ``[4]``, a batch of
        one row is perf_analyzer's default; the others take ``--shape``), HTTP with the same header."""
        batched = self.label in ("add-tb", "bare-b")
        return pa.measure(self.model, self.address, self.proto, concurrency, seconds, input_data=input_data,
                          shape=None if batched else "INPUT0:1,4", headers=triton_http(self.triton))


def latency(target: Target | AddTarget, n: int) -> list[float]:
    client, out = target.client(), []
    try:
        for _ in range(n):
            t = time.perf_counter()
            target.infer(client)
            out.append(time.perf_counter() - t)
    finally:
        client.close()
    return out


def throughput(target: Target | AddTarget, clients: int, seconds: float) -> float:
    conns = [target.client() for _ in range(clients)]
    counts = [0] * clients
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    end = [0.0]

    def worker(i: int) -> None:
        try:
            target.infer(conns[i])  # connect + warm this connection
            barrier.wait()
            while time.perf_counter() < end[0]:
                target.infer(conns[i])
                counts[i] += 1
        except Exception as exc:  # every failure counts
            errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    end[0] = time.perf_counter() + 3600
    barrier.wait()
    start = time.perf_counter()
    end[0] = start + seconds
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"{target.name}: {errors[:3]}")
    return sum(counts) / elapsed


def batch_counts(dep: dict, name: str) -> dict[int, int]:
    stats = httpx.get(f"{dep['url']}/v2/models/{name}/stats", timeout=10).json()["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def tensor_latency(dep: dict, name: str, binary: bool, n: int) -> list[float]:
    data = np.random.default_rng(0).random((1, WIDTH), dtype=np.float32)
    client = httpclient.InferenceServerClient(url=dep["url"].removeprefix("http://"), network_timeout=120)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            inp = httpclient.InferInput("input-0", [1, WIDTH], "FP32")
            inp.set_data_from_numpy(data, binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("output-0", binary_data=binary)]
            result = client.infer(name, [inp], outputs=wanted,
                                  headers=triton_http(dep["runtime"] == "triton"))
            reply = result.as_numpy("output-0")
            out.append(time.perf_counter() - t)
            if reply.shape != (1, WIDTH) or not np.allclose(reply, data, rtol=1e-6, atol=0):
                raise RuntimeError(f"{name}: identity reply differs (binary={binary})")
    finally:
        client.close()
    return out


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, 50))


# -- trivial model: mlplane vs bare Triton ----------------------------------------------------------
BATCHING_CLIENTS = (16, 32)  # gRPC clients of the dynamic batching rows


def trivial_rounds(deps: dict, bare: dict[str, BareTriton], rounds: int, requests: int, seconds: float,
                   pa: PerfAnalyzer | None, work: Path) -> dict:
    """p50 at 1 connection and throughput at 8 connections of mlplane (``add-t`` over HTTP and gRPC) vs
    ``bare``, and throughput at 16 and 32 gRPC clients with vs without batching, in rounds that alternate the
    order.

    With ``pa`` perf_analyzer measures every row (p50: median of the rounds' p50 at concurrency 1), else
    tritonclient does (p50: ``requests`` sequential requests per round, pooled). tritonclient always warms
    up and checks the replies."""
    input_data = work / "perf_analyzer-input.json"
    input_data.write_text(json.dumps({"data": [{"INPUT0": ADD_ROW.ravel().tolist()}]}))

    def p50_samples(t: AddTarget) -> list[float]:
        if pa is not None:
            return [t.perf_analyzer(pa, 1, seconds, input_data).p50_ms]
        return [s * 1000.0 for s in latency(t, requests)]

    compute: dict[tuple[str, str, int], list[float]] = {}  # perf_analyzer: the server's µs per request

    def rate(t: AddTarget, clients: int) -> float:  # req/s
        if pa is not None:
            m = t.perf_analyzer(pa, clients, seconds, input_data)
            compute.setdefault((t.label, t.proto, clients), []).append(m.compute_us)
            return m.throughput
        return throughput(t, clients, seconds)

    def target(label: str, proto: str) -> AddTarget:
        if label in bare:
            return AddTarget(label, label, bare[label].url, bare[label].grpc, proto)
        return AddTarget(label, label, deps[label]["url"].removeprefix("http://"), deps[label]["grpc"], proto)

    pairs = {"http": (target("add-t", "http"), target("bare", "http")),
             "grpc": (target("add-t", "grpc"), target("bare", "grpc"))}
    batching = [target(label, "grpc") for label in ("add-tb", "add-t", "bare-b", "bare")]
    for t in [*(t for pair in pairs.values() for t in pair), *batching]:  # warm-up
        latency(t, 100)
        throughput(t, 16, 0.5)
    lat: dict[tuple[str, str], list[float]] = {(t.role, p): [] for p, pair in pairs.items() for t in pair}  # ms
    tput: dict[tuple[str, str, int], list[float]] = {}
    before = batch_counts({"url": deps["add-tb"]["url"]}, "add-tb")
    for r in range(rounds):
        for proto, pair in pairs.items():
            for t in pair if r % 2 == 0 else pair[::-1]:
                lat[(t.role, proto)] += p50_samples(t)
        for proto, pair in pairs.items():
            for t in pair if r % 2 == 0 else pair[::-1]:
                tput.setdefault((t.role, proto, 8), []).append(rate(t, 8))
        for clients in BATCHING_CLIENTS:
            for t in batching if r % 2 == 0 else batching[::-1]:
                tput.setdefault((t.label, "grpc", clients), []).append(rate(t, clients))
        print(f"trivial model round {r + 1}/{rounds} done", flush=True)
    after = batch_counts({"url": deps["add-tb"]["url"]}, "add-tb")
    batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    p50 = {k: statistics.median(v) if pa is not None else float(np.percentile(v, 50)) for k, v in lat.items()}
    return {"p50": p50, "tput": {k: statistics.median(v) for k, v in tput.items()},
            "rounds": dict(tput), "p50_rounds": dict(lat) if pa is not None else {},
            "batches": {s: n for s, n in sorted(batches.items()) if n},
            "compute": {k: statistics.median(v) for k, v in compute.items() if all(v)}}


def trivial_report(m: dict) -> Report:
    report = Report("metric", "A", "B", "A / B")
    lat, tput = m["p50"], m["tput"]
    for proto, label in (("http", "HTTP"), ("grpc", "gRPC")):
        a, b = lat[("add-t", proto)], lat[("bare", proto)]
        report.add(f"{label} p50, 1 connection: mlplane (A) vs bare (B)", f"{a:.3f} ms", f"{b:.3f} ms",
                   ratio=a / b, goal="≤ 1.15", ok=a / b <= 1.15)
    for proto, label in (("http", "HTTP"), ("grpc", "gRPC")):
        a, b = tput[("add-t", proto, 8)], tput[("bare", proto, 8)]
        report.add(f"{label} throughput, 8 connections: mlplane (A) vs bare (B)", f"{a:.0f} req/s", f"{b:.0f} req/s",
                   ratio=a / b, goal="≥ 0.85", ok=a / b >= 0.85)
    for proto, label in (("http", "HTTP"), ("grpc", "gRPC")):  # where the time goes (perf_analyzer only)
        a, b = m["compute"].get(("add-t", proto, 8)), m["compute"].get(("bare", proto, 8))
        if a and b:
            report.add(f"{label} server compute per request (input + infer + output), 8 connections: mlplane (A) "
                       "vs bare (B)", f"{a:.0f} µs", f"{b:.0f} µs", ratio=a / b, goal="report", ok=None)
    for clients in BATCHING_CLIENTS:  # the goal is at 16; 32 shows how the gain grows with the queue
        for batched, plain, who, goal in (("add-tb", "add-t", "mlplane", 2.0 if clients == 16 else None),
                                          ("bare-b", "bare", "bare", None)):
            a, b = tput[(batched, "grpc", clients)], tput[(plain, "grpc", clients)]
            report.add(f"{who} dynamic batching gain, {clients} gRPC clients: batching (A) vs none (B)",
                       f"{a:.0f} req/s", f"{b:.0f} req/s", ratio=a / b, goal=f"≥ {goal:.2f}" if goal else "report",
                       ok=a / b >= goal if goal else None)
    a, b = tput[("add-tb", "grpc", 16)], tput[("bare-b", "grpc", 16)]
    report.add("dynamic batching, 16 gRPC clients: mlplane (A) vs bare (B)", f"{a:.0f} req/s", f"{b:.0f} req/s",
               ratio=a / b, goal="report", ok=None)
    return report


def spread(rounds: dict, p50_rounds: dict) -> str:
    """Per-round p50 (perf_analyzer: one p50 per round) and throughput of mlplane / bare, and per-round batching
    gains (the noise between rounds of the same run)."""
    latencies = []
    for proto, label in (("http", "HTTP"), ("grpc", "gRPC")):
        if p50_rounds:
            ratios = [a / b for a, b in zip(p50_rounds[("add-t", proto)], p50_rounds[("bare", proto)], strict=True)]
            latencies.append(f"{label} {min(ratios):.2f}–{max(ratios):.2f}")
    parts = []
    for proto, label in (("http", "HTTP"), ("grpc", "gRPC")):
        ratios = [a / b for a, b in zip(rounds[("add-t", proto, 8)], rounds[("bare", proto, 8)], strict=True)]
        parts.append(f"{label} {min(ratios):.2f}–{max(ratios):.2f}")
    gains = []
    for batched, plain in (("add-tb", "add-t"), ("bare-b", "bare")):
        ratios = [a / b for a, b in zip(rounds[(batched, "grpc", 16)], rounds[(plain, "grpc", 16)], strict=True)]
        gains.append(f"{min(ratios):.2f}–{max(ratios):.2f}")
    p50 = f"p50 mlplane / bare per round: {', '.join(latencies)}; " if latencies else ""
    return (f"{p50}throughput mlplane / bare per round: {', '.join(parts)}; batching gain per round: mlplane "
            f"{gains[0]}, bare {gains[1]}")


def load_generator(choice: str) -> PerfAnalyzer | None:
    """perf_analyzer for the trivial-model rows (``auto``: when found; ``perf_analyzer``: installed into the
    cache when missing, see bench/perf_analyzer.py), or None for tritonclient (``python``)."""
    if choice == "python":
        return None
    try:
        return find_perf_analyzer()
    except PerfAnalyzerMissing as exc:
        if choice == "auto":
            print(f"load generator: tritonclient (Python) for every row; {exc}", flush=True)
            return None
        print(f"perf_analyzer missing ({exc}): installing it", flush=True)
        return install()


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trivial-rounds", type=int, default=5, help="rounds of the mlplane vs bare Triton part")
    parser.add_argument("--seconds", type=float, default=2.5,
                        help="throughput window per measurement (perf_analyzer: also each trivial-model p50)")
    parser.add_argument("--requests", type=int, default=150,
                        help="latency requests per deployment and round (tritonclient's p50 rows)")
    parser.add_argument("--load-generator", choices=("auto", "perf_analyzer", "python"), default="auto",
                        help="what measures the trivial-model rows: Triton's perf_analyzer (C++; auto: when "
                             "bench/perf_analyzer.py finds it) or tritonclient (Python threads); the iris and "
                             "identity rows always use tritonclient")
    parser.add_argument("--trivial-only", action="store_true",
                        help="measure only the mlplane vs bare Triton table (deploys add-t and add-tb) and print it; "
                             "bench/RESULTS.md is left as it is")
    parser.add_argument("--binary-samples", type=int, default=20)
    parser.add_argument("--json-samples", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()
    pa = load_generator(args.load_generator)
    if pa is not None:
        print(f"load generator for the trivial-model rows: {pa.binary}", flush=True)
    from mlplane_pipelines.iris import train_and_register

    with tempfile.TemporaryDirectory(prefix="mlplane-bench-triton-") as tmp:
        state_dir = Path(tmp) / "platform" / ".mlplane"
        bare: dict[str, BareTriton] = {}
        up: list[Path] = []
        try:
            for name, batched in (("bare", False), ("bare-b", True)):
                bare[name] = BareTriton(Path(tmp) / "bare", name, batched)
            platform_yaml = Path(tmp) / "platform.yaml"
            platform_yaml.write_text(PLATFORM)
            up.append(state_dir)
            mlplane(state_dir, "up", "-f", str(platform_yaml))
            TRITON_HTTP.update(triton_http_inference_header(StatePaths(state_dir).control_key_file.read_text().strip()))
            tracking = json.loads(mlplane(state_dir, "status", "-o", "json"))["trackingUri"]
            deployments = {n: d for n, d in DEPLOYMENTS.items() if not args.trivial_only or d[0] == "add"}
            if not args.trivial_only:
                train_and_register(tracking, name="iris")
                register_identity(tracking)
            register_add(tracking)
            for name, (model, runtime, batching) in deployments.items():
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(DEPLOYMENT.format(name=name, model=model, runtime=runtime, extra=batching or ""))
                mlplane(state_dir, "deploy", "-f", str(path))
            deps: dict[str, dict] = json.loads(mlplane(state_dir, "status", "-o", "json"))["deployments"]
            assert all(deps[n]["status"] == "ready" for n in deployments), deps
            for server in bare.values():
                server.wait_ready()
            print(f"a platform + {len(deployments)} deployments + bare Triton ready "
                  f"({time.monotonic() - started:.0f}s)", flush=True)

            trivial = trivial_rounds(deps, bare, args.trivial_rounds, args.requests, args.seconds, pa, Path(tmp))
            if args.trivial_only:
                bare_report = trivial_report(trivial)
                print(bare_report.markdown())
                noise = spread(trivial["rounds"], trivial["p50_rounds"])
                print(f"Noise: {noise}. Load average {os.getloadavg()[0]:.1f} (1 min). "
                      "bench/RESULTS.md not written (--trivial-only).")
                return

            tb = Target("iris-tb", deps["iris-tb"], True)
            tp = Target("iris-t", deps["iris-t"], False)
            ks = Target("iris-k", deps["iris-k"], False)
            for t in (tb, tp, ks):  # warm-up
                latency(t, 100)
                throughput(t, 16, 0.5)
            for name in ("ident-t", "ident-k"):
                tensor_latency(deps[name], name, True, 2)
                tensor_latency(deps[name], name, False, 1)

            lat = {t.name: [] for t in (tp, ks)}
            tput: dict[tuple[str, int], list[float]] = {
                (t.name, c): [] for t, c in ((tb, 16), (tp, 16), (tp, 8), (ks, 8), (ks, 16))
            }
            before = batch_counts(deps["iris-tb"], "iris-tb")
            for r in range(args.rounds):
                pair = (tp, ks) if r % 2 == 0 else (ks, tp)
                for t in pair:
                    lat[t.name] += latency(t, args.requests)
                for t, c in ((tb, 16), (tp, 16)) if r % 2 == 0 else ((tp, 16), (tb, 16)):
                    tput[(t.name, c)].append(throughput(t, c, args.seconds))
                for c in (8, 16):
                    for t in pair:
                        if (t.name, c) != ("iris-t", 16):
                            tput[(t.name, c)].append(throughput(t, c, args.seconds))
                # iris-t at 16 is measured once per round above, paired with iris-tb
                print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - started:.0f}s)", flush=True)
            after = batch_counts(deps["iris-tb"], "iris-tb")
            batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
            batches = {s: n for s, n in sorted(batches.items()) if n}

            tensor: dict[tuple[str, bool], list[float]] = {}
            for name in ("ident-t", "ident-k"):
                tensor[(name, True)] = tensor_latency(deps[name], name, True, args.binary_samples)
                tensor[(name, False)] = tensor_latency(deps[name], name, False, args.json_samples)
            print(f"measurements done ({time.monotonic() - started:.0f}s)", flush=True)
        finally:
            for server in bare.values():
                server.stop()
            for state_dir in up:
                try:
                    mlplane(state_dir, "down")
                except Exception as exc:  # still report the failure to stop
                    print(f"mlplane down failed: {exc}", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in tput.items()}
    report = Report("metric", "A", "B", "A / B")

    def row(metric: str, a: str, b: str, ratio: float, goal: str, ok: bool | None) -> None:
        report.add(metric, a, b, ratio=ratio, goal=goal, ok=ok)

    r = med[("iris-tb", 16)] / med[("iris-t", 16)]
    row("Triton iris throughput, 16 clients: batching (A) vs none (B)",
        f"{med[('iris-tb', 16)]:.0f} req/s", f"{med[('iris-t', 16)]:.0f} req/s", r, "≥ 2.00", r >= 2.0)
    r = p50_ms(lat["iris-t"]) / p50_ms(lat["iris-k"])
    row("iris p50 latency, 1 conn: Triton (A) vs kserve (B)",
        f"{p50_ms(lat['iris-t']):.2f} ms", f"{p50_ms(lat['iris-k']):.2f} ms", r, "report", None)
    for c in (8, 16):
        r = med[("iris-t", c)] / med[("iris-k", c)]
        row(f"iris throughput, {c} clients: Triton (A) vs kserve (B)",
            f"{med[('iris-t', c)]:.0f} req/s", f"{med[('iris-k', c)]:.0f} req/s", r, "report", None)
    r = med[("iris-tb", 16)] / med[("iris-k", 16)]
    row("iris throughput, 16 clients: Triton with batching (A) vs kserve (B)",
        f"{med[('iris-tb', 16)]:.0f} req/s", f"{med[('iris-k', 16)]:.0f} req/s", r, "report", None)
    for name, label in (("ident-t", "Triton"), ("ident-k", "kserve")):
        b, j = p50_ms(tensor[(name, True)]), p50_ms(tensor[(name, False)])
        row(f"1 MiB FP32 request+reply p50, {label}: binary (A) vs JSON (B)",
            f"{b:.1f} ms", f"{j:.0f} ms", b / j, "≤ 0.10", b / j <= 0.10)

    def evidence(counts: dict[int, int]) -> str:
        total, requests = sum(counts.values()), sum(s * n for s, n in counts.items())
        dist = ", ".join(f"{s}: {n}" for s, n in counts.items()) or "none"
        mean = requests / total if total else 0
        return f"{dist} — {total} executions for {requests} requests (mean batch {mean:.1f})"

    bare_report = trivial_report(trivial)
    if pa is not None:
        trivial_method = (
            f"Load generator for every row of this table: Triton's `perf_analyzer` {PERF_ANALYZER_VERSION} (C++, "
            "`--sync`: one thread and connection per client, HTTP with binary tensors and gRPC; "
            "`bench/perf_analyzer.py`); tritonclient (Python) only warms up and checks each server's reply. "
            f"After warm-ups, {args.trivial_rounds} rounds alternating mlplane and bare, each measurement "
            f"{args.seconds:g} s (three merged `time_windows` of {args.seconds / 3:.2f} s): p50 at concurrency 1 "
            "(median of rounds) and throughput at 8 connections and at 16 and 32 gRPC clients (median of rounds).")
    else:
        trivial_method = (
            "Load generator for every row of this table: tritonclient (Python; HTTP and gRPC), one client per "
            f"thread. After warm-ups, {args.trivial_rounds} rounds alternating mlplane and bare: {args.requests} "
            f"sequential requests each (p50, pooled) and {args.seconds:g} s windows at 8 connections and at 16 "
            "and 32 gRPC clients (throughput, median of rounds).")
    load = os.getloadavg()
    body = "\n".join([
        f"{run_context()} The platform (tritonserver, kserve servers, MLflow), the bare tritonservers and the "
        f"load generator share the CPUs with whatever else runs (load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the end, 1 / 5 / 15 min): compare the ratios, which were measured side by side.",
        "",
        "**`runtime: triton` vs a bare Triton Python-backend model** (the trivial model: `INPUT0` FP32 `[-1, 4]` → "
        "`OUTPUT0 = INPUT0 + 1`). mlplane: an MLflow pyfunc doing that add, deployed as `add-t` (no batching) "
        "and `add-tb` (`spec.batching`: maxBatchSize 32, preferredBatchSizes [8, 16], maxLatencyMs 1). Triton's "
        "HTTP inference API is closed to clients (they infer over gRPC): the HTTP rows send the header only the "
        "platform's owner can derive, so mlplane also pays Triton's restricted-API check there. Bare: "
        "the same tritonserver binary, Python backend and serving flags (without mlplane's API restrictions), "
        "one server per model, with a hand-written "
        "`model.py` doing the same numpy add per request (`bench/triton.py`, `BARE_MODEL_PY`), without and with "
        f"the same `dynamic_batching`. One `[1, 4]` request. {trivial_method}",
        "",
        bare_report.markdown(),
        "",
        f"Noise: {spread(trivial['rounds'], trivial['p50_rounds'])}. Batches `add-tb` executed "
        f"(`/v2/models/add-tb/stats`, batch size: count): {evidence(trivial['batches'])}.",
        "",
        "**iris, the identity model, Triton vs kserve** (Triton's HTTP requests with the same header; load "
        "generator: tritonclient for every row): "
        "iris (`mlplane_pipelines.iris`) on triton with `spec.batching` (maxBatchSize 32, "
        "preferredBatchSizes [8, 16], maxLatencyMs 2), on triton without batching and on kserve; an identity "
        "pyfunc with tensor signature FP32 `[-1, 262144]` on triton and kserve. Clients: `tritonclient.http`, "
        "one client per thread, one-row iris requests (`[1, 1]` per column with batching, `[1]` otherwise). "
        f"After warm-ups, {args.rounds} rounds alternating the deployments: {args.requests} sequential requests "
        f"per deployment (latency, pooled) and {args.seconds:g} s windows at 8 / 16 concurrent clients "
        f"(throughput, median of rounds). 1 MiB: one `[1, 262144]` FP32 tensor in and out, "
        f"{args.binary_samples} binary (binary tensor extension for input and output) and {args.json_samples} "
        "JSON samples per runtime, timed from encoding the request to decoding the reply, reply checked "
        "equal to the input.",
        "",
        report.markdown(),
        "",
        f"Dynamic batching evidence (`/v2/models/iris-tb/stats`, batches executed during the measured rounds, "
        f"batch size: count): {evidence(batches)}.",
        "",
        f"Reproduce: `.venv/bin/python bench/triton.py --load-generator {'perf_analyzer' if pa else 'python'}` "
        f"({time.monotonic() - started:.0f} s).",
    ])
    write_section(SECTION, body)
    print(body)
    print("all goals met" if report.all_met and bare_report.all_met else "SOME GOALS MISSED")


if __name__ == "__main__":
    main()
