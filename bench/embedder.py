"""Benchmark: the RAG service's Embedder deployment with `@serve.batch` adaptive batching vs without.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/embedder.py [--rounds 3] [--seconds 8]'

(Ray binds more than loopback: run it in a private network namespace as above, as the tests do.)

Registers the packaged embedder in a throwaway MLflow store (sqlite, no server), starts a private Ray
(node 127.0.0.1, no dashboard) and runs the RAG application's Embedder deployment twice, with the
arguments and options ``mlplane.rag.serve_config.serve_app_config`` derives from a ``runtime: ray``
spec that differs only in ``spec.batching``: ``batched`` (maxBatchSize 16, maxLatencyMs 10) and
``unbatched`` (no batching: a batch of 1). Sixteen concurrent clients call each Embedder through its
deployment handle with one short question per request, in rounds that alternate the two. The bare
embedder in this process (16 texts per call vs 1) is measured in the same run for reference. Writes
bench/RESULTS.md under ``## RAG embedder: adaptive batching`` (other sections are kept). Goal: batched ≥ 2× unbatched.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import Report, run_context, write_section

HERE = Path(__file__).resolve().parent
SECTION = "## RAG embedder: adaptive batching"
CLIENTS = 16
TEXT = "How does the local platform restart a crashed model server?"
SPEC = {"model": "models:/mlplane-generator@champion", "runtime": "ray", "rag": {"generator": {"type": "extractive"}}}


def embedder_app(name: str, batching: dict | None, tracking_uri: str):
    """The application's Embedder deployment, with the arguments and options `serve_app_config` gives it."""
    from mlplane.rag.serve_app import Embedder
    from mlplane.rag.serve_config import EMBEDDER, serve_app_config
    from mlplane.spec import ModelDeployment, Platform

    spec = {**SPEC, **({"batching": batching} if batching else {})}
    app = serve_app_config(ModelDeployment.model_validate({"metadata": {"name": name}, "spec": spec}),
                           Platform.default(), tracking_uri=tracking_uri)
    options = next(d for d in app["deployments"] if d["name"] == EMBEDDER)
    return Embedder.options(max_ongoing_requests=options["max_ongoing_requests"], num_replicas=1,
                            ray_actor_options=options["ray_actor_options"]).bind(app["args"]["embedder"], tracking_uri)


async def throughput(handle, seconds: float) -> float:
    """Requests per second with CLIENTS concurrent callers, each one text per request."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await handle.embed.remote([TEXT])
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return done / (time.perf_counter() - start)


async def measure(handles: dict, rounds: int, seconds: float) -> dict[str, list[float]]:
    """Requests per second of each handle, in rounds that alternate them (after a warm-up)."""
    rates: dict[str, list[float]] = {name: [] for name in handles}
    for handle in handles.values():
        await throughput(handle, 2.0)
    for _ in range(rounds):
        for name, handle in handles.items():
            rates[name].append(await throughput(handle, seconds))
            print(f"{name}: {rates[name][-1]:.1f} req/s", flush=True)
    return rates


def bare(seconds: float) -> tuple[float, float]:
    """Texts per second of the bare embedder: one text per call, and 16 per call."""
    from mlplane.rag.embedding import Embedder

    embedder = Embedder()
    rates = []
    for size in (1, CLIENTS):
        embedder.embed([TEXT] * size)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            embedder.embed([TEXT] * size)
            n += size
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    # bench/triton.py would shadow the `triton` package that torch probes for.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    from ray import serve

    from mlplane.rag.embedding import register_embedder
    from mlplane.runtime.local.process import free_port

    with tempfile.TemporaryDirectory(prefix="mlplane-bench-embedder-") as tmp:
        os.chdir(tmp)  # MLflow's file artifact store lands here
        tracking_uri = f"sqlite:///{tmp}/mlflow.db"
        register_embedder(tracking_uri)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=4,
                 object_store_memory=256 * 1024 * 1024, configure_logging=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            handles = {
                "batched": serve.run(embedder_app("batched", {"maxBatchSize": 16, "maxLatencyMs": 10}, tracking_uri),
                                     name="batched", route_prefix=None),
                "unbatched": serve.run(embedder_app("unbatched", None, tracking_uri), name="unbatched",
                                       route_prefix=None),
            }
            rates = asyncio.run(measure(handles, args.rounds, args.seconds))
        finally:
            serve.shutdown()
            ray.shutdown()
        one, sixteen = bare(args.seconds / 2)

    batched, unbatched = statistics.median(rates["batched"]), statistics.median(rates["unbatched"])
    report = Report("metric", "A", "B", "A / B")
    ratio = batched / unbatched
    report.add(f"Embedder deployment, {CLIENTS} concurrent clients, requests/s (median of {args.rounds})",
               f"@serve.batch 16 / 10 ms: {batched:.1f}", f"batch of 1: {unbatched:.1f}", ratio=ratio,
               goal="≥ 2", ok=ratio >= 2)
    report.add("bare embedder in-process, texts/s (reference)", f"16 per call: {sixteen:.1f}",
               f"1 per call: {one:.1f}", ratio=sixteen / one)
    body = (f"{run_context()} Same Ray instance, rounds alternating the two applications; one Embedder "
            f"replica each; requests through the deployment handle, one {len(TEXT)}-character question "
            f"each.\n\n{report.markdown()}\n\n{report.verdict()}.")
    write_section(SECTION, body)
    print(body)
    return 0 if report.all_met else 1


if __name__ == "__main__":
    sys.exit(main())
