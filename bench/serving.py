"""Benchmark: mlplane's model server endpoint vs a bare KServe ModelServer on the same MLflow model.

    .venv/bin/python bench/serving.py [--rounds 6] [--seconds 2.0]

Starts both servers on 127.0.0.1 (mlplane: ``python -m mlplane.serving``; baseline:
``bench/bare_kserve.py``), serving one saved iris LogisticRegression. Measures, over HTTP (V2 JSON,
httpx) and gRPC (tritonclient), with a one-row request:

* latency p50/p99 at 1 connection (sequential requests),
* throughput at 8 concurrent connections (asyncio clients),

in rounds that alternate the two servers (and the order inside a round) so that drift on this
shared 2-core machine hits both alike. Writes the table to bench/RESULTS.md under
``## Serving: mlplane endpoint vs bare KServe`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from _results import Report, run_context, write_section
from mlplane.runtime.local.process import free_port
from mlplane_pipelines.iris import FEATURES, load_data

HERE = Path(__file__).resolve().parent
SECTION = "## Serving: mlplane endpoint vs bare KServe"
NAME = "iris"
COLUMNS = FEATURES
ROW = [5.9, 3.0, 5.1, 1.8]
CONCURRENCY = 8
GOALS = {"p50": 1.10, "p99": 1.25, "throughput": 0.90}


def save_model(path: Path) -> None:
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X, y = load_data()
    model = LogisticRegression(max_iter=1000).fit(X, y.to_numpy())
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(X, model.predict(X)), pip_requirements=["scikit-learn"]
    )


class Server:
    def __init__(self, label: str, args: list[str], log: Path) -> None:
        self.label = label
        self.http_port, self.grpc_port = free_port(), free_port()
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*args, "--name", NAME, "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log = log

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.http}/v2/models/{NAME}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.label} not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


JSON_BODY = (
    '{"inputs":['
    + ",".join(
        f'{{"name":"{c}","shape":[1],"datatype":"FP64","data":[{v}]}}'
        for c, v in zip(COLUMNS, ROW, strict=True)
    )
    + "]}"
).encode()
HEADERS = {"content-type": "application/json"}


def grpc_inputs(module) -> list:
    inputs = []
    for c, v in zip(COLUMNS, ROW, strict=True):
        inp = module.InferInput(c, [1], "FP64")
        inp.set_data_from_numpy(np.array([v]))
        inputs.append(inp)
    return inputs


# -- latency at 1 connection ---------------------------------------------------------------------
def latency_http(server: Server, n: int) -> list[float]:
    out = []
    url = f"/v2/models/{NAME}/infer"
    with httpx.Client(base_url=server.http, timeout=10) as client:
        for _ in range(n):
            t = time.perf_counter()
            r = client.post(url, content=JSON_BODY, headers=HEADERS)
            out.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{server.label}: {r.status_code} {r.text}")
    return out


def latency_grpc(server: Server, n: int, client: grpcclient.InferenceServerClient) -> list[float]:
    inputs = grpc_inputs(grpcclient)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.infer(NAME, inputs)
        out.append(time.perf_counter() - t)
    return out


# -- throughput at 8 connections -----------------------------------------------------------------
async def throughput_http(server: Server, seconds: float) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.http, timeout=10, limits=limits) as client:
        url = f"/v2/models/{NAME}/infer"
        await asyncio.gather(
            *(client.post(url, content=JSON_BODY, headers=HEADERS) for _ in range(CONCURRENCY))
        )
        done = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                r = await client.post(url, content=JSON_BODY, headers=HEADERS)
                if r.status_code != 200:
                    raise RuntimeError(f"{server.label}: {r.status_code} {r.text}")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - start)


async def throughput_grpc(server: Server, seconds: float) -> float:
    clients = [grpcaio.InferenceServerClient(server.grpc) for _ in range(CONCURRENCY)]
    inputs = grpc_inputs(grpcaio)
    try:
        await asyncio.gather(*(c.infer(NAME, inputs) for c in clients))
        done = 0
        end = time.perf_counter() + seconds

        async def worker(client) -> None:
            nonlocal done
            while time.perf_counter() < end:
                await client.infer(NAME, inputs)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        return done / (time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--requests", type=int, default=150, help="latency requests per server, protocol, round"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="throughput window per server, protocol, round"
    )
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-") as tmp:
        model = Path(tmp) / "iris"
        save_model(model)
        py = sys.executable
        servers = [
            Server(
                "mlplane",
                [py, "-m", "mlplane.serving", "--model-uri", str(model), "--model-version", "1"],
                Path(tmp) / "mlplane.log",
            ),
            Server(
                "bare", [py, str(HERE / "bare_kserve.py"), "--model-uri", str(model)], Path(tmp) / "bare.log"
            ),
        ]
        try:
            for s in servers:
                s.wait_ready()
            grpc_clients = {s.label: grpcclient.InferenceServerClient(s.grpc) for s in servers}
            lat: dict[tuple[str, str], list[float]] = {
                (s.label, p): [] for s in servers for p in ("http", "grpc")
            }
            tput: dict[tuple[str, str], list[float]] = {
                (s.label, p): [] for s in servers for p in ("http", "grpc")
            }
            for s in servers:  # warm-up
                latency_http(s, 200)
                latency_grpc(s, 200, grpc_clients[s.label])
                asyncio.run(throughput_http(s, 0.5))
                asyncio.run(throughput_grpc(s, 0.5))
            for r in range(args.rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for s in order:
                    lat[(s.label, "http")] += latency_http(s, args.requests)
                for s in order[::-1]:
                    lat[(s.label, "grpc")] += latency_grpc(s, args.requests, grpc_clients[s.label])
                for s in order:
                    tput[(s.label, "http")].append(asyncio.run(throughput_http(s, args.seconds)))
                for s in order[::-1]:
                    tput[(s.label, "grpc")].append(asyncio.run(throughput_grpc(s, args.seconds)))
                print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - started:.0f}s)", flush=True)
            for c in grpc_clients.values():
                c.close()
        finally:
            for s in servers:
                s.stop()

    report = Report("protocol", "metric", "mlplane", "bare KServe", "mlplane / bare")
    for proto, label in (("http", "HTTP (V2 JSON)"), ("grpc", "gRPC")):
        m, b = lat[("mlplane", proto)], lat[("bare", proto)]
        tm, tb = statistics.median(tput[("mlplane", proto)]), statistics.median(tput[("bare", proto)])
        for metric, mv, bv, unit, goal, better_low in (
            ("p50 latency, 1 conn", pct(m, 50), pct(b, 50), "ms", GOALS["p50"], True),
            ("p99 latency, 1 conn", pct(m, 99), pct(b, 99), "ms", GOALS["p99"], True),
            (f"throughput, {CONCURRENCY} conns", tm, tb, "req/s", GOALS["throughput"], False),
        ):
            ratio = mv / bv
            fmt = "{:.2f}" if unit == "ms" else "{:.0f}"
            report.add(label, metric, f"{fmt.format(mv)} {unit}", f"{fmt.format(bv)} {unit}", ratio=ratio,
                       goal=f"≤ {goal:.2f}" if better_low else f"≥ {goal:.2f}",
                       ok=ratio <= goal if better_low else ratio >= goal)
    table = "\n".join(
        [
            f"{run_context()} The load generator shares the CPUs. "
            f"One-row iris request; {args.rounds} alternating rounds of {args.requests} sequential requests "
            f"(latency, pooled) and {args.seconds:.0f} s windows at {CONCURRENCY} concurrent connections "
            "(throughput, median of rounds). Baseline: `bench/bare_kserve.py`, a stock `kserve.ModelServer` "
            "(default settings, bound to loopback) with a minimal `kserve.Model` "
            "(V2 → DataFrame → pyfunc.predict → V2) on the same saved model. "
            "mlplane: `python -m mlplane.serving` with default flags.",
            "",
            report.markdown(),
            "",
            f"Reproduce: `.venv/bin/python bench/serving.py` ({time.monotonic() - started:.0f} s).",
        ]
    )
    write_section(SECTION, table)
    print(table)
    print(report.verdict())


if __name__ == "__main__":
    main()
