"""Benchmark: an online feature fetch through mlplane's serving path vs the Feast SDK directly.

    .venv/bin/python bench/features.py [--rounds 6] [--calls 300]

One Feast repo in a temporary dir, configured as the local platform configures it (file registry,
sqlite online store), with the iris feature pipeline applied and materialized
(``mlplane_pipelines.features``). Per call, one entity (``flower_id`` 7), the four iris features:

* mlplane: ``FeatureJoin.join`` — what the model server runs per request before predict: read the
  V2 ``flower_id`` input, fetch through ``OnlineFeatures`` (Feast SDK, columnar entity rows),
  handle missing values, build the typed feature columns;
* Feast SDK: ``FeatureStore.get_online_features(features, entity_rows=[{"flower_id": 7}]).to_dict()``;
* for reference, the Feast feature server (``feast serve``, HTTP ``/get-online-features``, one
  keep-alive httpx connection): the path the serving code does not take.

Rounds alternate the order of the paths so drift on this shared machine hits them alike. Writes
bench/RESULTS.md under ``## Features: online fetch through mlplane vs the Feast SDK``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from _results import Report, run_context, write_section
from mlplane.core.signature import TensorMeta
from mlplane.features.local import write_repo_config
from mlplane.features.online import FeatureJoin, OnlineFeatures
from mlplane.runtime.local.process import free_port
from mlplane.spec import load_dict
from mlplane.spec.deployment import FeaturesSpec
from mlplane_pipelines import features as F
from mlplane_pipelines.iris import FEATURES

SECTION = "## Features: online fetch through mlplane vs the Feast SDK"
ENTITY = 7
GOAL = 1.15


@dataclass(frozen=True)
class IdInput:
    """A V2 request input holding the entity ids, as the model server receives it."""

    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.array


def p50_ms(fn: Callable[[], object], calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def start_feature_server(repo: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port("127.0.0.1")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(repo / "run")}
    proc = subprocess.Popen([sys.executable, "-m", "feast.cli.cli", "--feature-store-yaml",
                             str(repo / "feature_store.yaml"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--no-access-log"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("feast serve did not become ready in 180 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=300)
    a = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-features-") as tmp:
        repo = Path(tmp) / "feast"
        platform = load_dict({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                              "metadata": {"name": "bench"}, "spec": {"featureStore": {"enabled": True}}})
        write_repo_config(platform, repo)
        F.run(repo)  # parquet source, apply, materialize_incremental
        spec = FeaturesSpec(entity_key=F.ENTITY_KEY, features=F.FEATURE_REFS)
        join = FeatureJoin(OnlineFeatures(spec, repo / "feature_store.yaml"),
                           [TensorMeta(f, "FP64", (-1,)) for f in FEATURES])
        request = [IdInput(F.ENTITY_KEY, "INT64", [1], np.array([ENTITY], dtype=np.int64))]
        fs = F.store(repo)
        sdk_rows = [{F.ENTITY_KEY: ENTITY}]

        joined = {c.name: c.as_numpy()[0] for c in join.join(request)}
        direct = fs.get_online_features(features=F.FEATURE_REFS, entity_rows=sdk_rows).to_dict()
        assert [joined[f] for f in FEATURES] == [direct[f][0] for f in FEATURES], "the paths disagree"

        server, url = start_feature_server(repo)
        try:
            client = httpx.Client(base_url=url, timeout=10)
            body = {"features": F.FEATURE_REFS, "entities": {F.ENTITY_KEY: [ENTITY]}}
            paths: dict[str, Callable[[], object]] = {
                "mlplane": lambda: join.join(request),
                "sdk": lambda: fs.get_online_features(features=F.FEATURE_REFS, entity_rows=sdk_rows).to_dict(),
                "http": lambda: client.post("/get-online-features", json=body).raise_for_status(),
            }
            for fn in paths.values():  # warm-up
                p50_ms(fn, 50)
            results: dict[str, list[float]] = {k: [] for k in paths}
            order = list(paths)
            for r in range(a.rounds):
                for key in order if r % 2 == 0 else order[::-1]:
                    results[key].append(p50_ms(paths[key], a.calls))
            client.close()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    p50 = {k: statistics.median(v) for k, v in results.items()}
    report = Report("metric", "A", "B", "A / B")
    ratio = p50["mlplane"] / p50["sdk"]
    report.add("fetch p50: mlplane serving path (A) vs Feast SDK `get_online_features` (B)",
               f"{p50['mlplane']:.3f} ms", f"{p50['sdk']:.3f} ms", ratio=ratio, goal=f"≤ {GOAL:.2f}",
               ok=ratio <= GOAL)
    report.add("fetch p50: Feast feature server over HTTP (A) vs Feast SDK (B)",
               f"{p50['http']:.3f} ms", f"{p50['sdk']:.3f} ms", ratio=p50["http"] / p50["sdk"])
    elapsed = time.monotonic() - started
    body = (
        f"{run_context()} One Feast repo configured like the local platform's (file registry, sqlite online "
        f"store), the iris feature view materialized by `mlplane_pipelines.features`; one entity "
        f"(`flower_id` {ENTITY}), four FP64 features per call. {a.rounds} rounds alternating the order of the "
        f"paths, {a.calls} sequential calls per path and round; the median of the rounds' p50s. mlplane: "
        "`FeatureJoin.join`, the model server's per-request step (entity ids from the V2 input → "
        "`OnlineFeatures.fetch` → typed feature columns). The model server reads the online store with the "
        "SDK in-process instead of calling the feature server: the HTTP row shows what that hop would cost.\n\n"
        f"{report.markdown()}\n\n"
        f"Reproduce: `.venv/bin/python bench/features.py` ({elapsed:.0f} s)."
    )
    write_section(SECTION, body)
    print(report.markdown())
    print(report.verdict())


if __name__ == "__main__":
    main()
