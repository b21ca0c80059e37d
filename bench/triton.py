"""Benchmark: `runtime: triton` on a real platform: dynamic batching, Triton vs kserve, binary tensors.

    .venv/bin/python bench/triton.py [--rounds 3] [--seconds 2.5]

Starts one platform (``mlplane up`` in a temporary state dir), registers the iris model and an
identity pyfunc with a tensor signature FP32 ``[-1, 262144]`` (1 MiB per row), and deploys:

* ``iris-tb``: iris on triton with ``spec.batching`` (maxBatchSize 32, preferred 8/16, 2 ms),
* ``iris-t``: iris on triton without batching, ``iris-k``: iris on kserve,
* ``ident-t`` / ``ident-k``: the identity model on triton / kserve.

Measures, with tritonclient.http (one client per thread, one-row iris requests), in rounds that
alternate the deployments: throughput at 16 clients with vs without dynamic batching (plus the batch
sizes Triton's ``/v2/models/<name>/stats`` counted), Triton vs kserve (p50 at 1 connection,
throughput at 8 and 16), and a 1 MiB FP32 request+reply with the binary tensor extension vs JSON on
both runtimes. Writes the table to bench/RESULTS.md under ``## Triton: runtimes, dynamic batching,
binary tensors`` (other sections are kept). Always runs ``mlplane down``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as httpclient

from _results import Report, run_context, write_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECTION = "## Triton: runtimes, dynamic batching, binary tensors"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.9, 3.0, 5.1, 1.8]
WIDTH = 262144  # FP32 values per row: 1 MiB
PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: bench}
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
DEPLOYMENTS = {  # name: (model, runtime, batching)
    "iris-tb": ("iris", "triton", True),
    "iris-t": ("iris", "triton", False),
    "iris-k": ("iris", "kserve", False),
    "ident-t": ("identity", "triton", False),
    "ident-k": ("identity", "kserve", False),
}


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

    def client(self) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(url=self.url, connection_timeout=30, network_timeout=60)

    def infer(self, client: httpclient.InferenceServerClient) -> None:
        out = client.infer(self.name, self.inputs).as_numpy("output-0")
        if out is None or out.size != 1:
            raise RuntimeError(f"{self.name}: unexpected output {out!r}")


def latency(target: Target, n: int) -> list[float]:
    client, out = target.client(), []
    try:
        for _ in range(n):
            t = time.perf_counter()
            target.infer(client)
            out.append(time.perf_counter() - t)
    finally:
        client.close()
    return out


def throughput(target: Target, clients: int, seconds: float) -> float:
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
            result = client.infer(name, [inp], outputs=wanted)
            reply = result.as_numpy("output-0")
            out.append(time.perf_counter() - t)
            if reply.shape != (1, WIDTH) or not np.allclose(reply, data, rtol=1e-6, atol=0):
                raise RuntimeError(f"{name}: identity reply differs (binary={binary})")
    finally:
        client.close()
    return out


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, 50))


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.5, help="throughput window per measurement")
    parser.add_argument("--requests", type=int, default=150, help="latency requests per deployment and round")
    parser.add_argument("--binary-samples", type=int, default=20)
    parser.add_argument("--json-samples", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()
    from mlplane_pipelines.iris import train_and_register

    with tempfile.TemporaryDirectory(prefix="mlplane-bench-triton-") as tmp:
        state_dir = Path(tmp) / ".mlplane"
        platform_yaml = Path(tmp) / "platform.yaml"
        platform_yaml.write_text(PLATFORM)
        try:
            mlplane(state_dir, "up", "-f", str(platform_yaml))
            tracking = json.loads(mlplane(state_dir, "status", "-o", "json"))["trackingUri"]
            train_and_register(tracking, name="iris")
            register_identity(tracking)
            for name, (model, runtime, batched) in DEPLOYMENTS.items():
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(DEPLOYMENT.format(name=name, model=model, runtime=runtime,
                                                  extra=BATCHING if batched else ""))
                mlplane(state_dir, "deploy", "-f", str(path))
            deps = json.loads(mlplane(state_dir, "status", "-o", "json"))["deployments"]
            assert all(deps[n]["status"] == "ready" for n in DEPLOYMENTS), deps
            print(f"platform + {len(DEPLOYMENTS)} deployments ready ({time.monotonic() - started:.0f}s)", flush=True)

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

    total = sum(batches.values())
    dist = ", ".join(f"{s}: {n}" for s, n in batches.items()) or "none"
    requests = sum(s * n for s, n in batches.items())
    body = "\n".join([
        f"{run_context()} The platform (tritonserver, kserve servers, MLflow) and the load generator share "
        "the CPUs. One platform (`mlplane up`, temporary state dir); "
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
        f"batch size: count): {dist} — {total} executions for {requests} requests "
        f"(mean batch {requests / total if total else 0:.1f}).",
        "",
        f"Reproduce: `.venv/bin/python bench/triton.py` ({time.monotonic() - started:.0f} s).",
    ])
    write_section(SECTION, body)
    print(body)
    print(report.verdict())


if __name__ == "__main__":
    main()
