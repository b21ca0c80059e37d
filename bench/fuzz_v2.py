"""Reliability: the V2 fuzz cases of tests/contract/v2_fuzz.py against one kserve-runtime model server,
counted by answer instead of asserted, for bench/RESULTS.md.

    .venv/bin/python bench/fuzz_v2.py [--examples 300] [--label after] [--pythonpath DIR]

Starts ``python -m mlplane.serving`` on a saved iris model (``--pythonpath`` runs another checkout's
``platform/``, e.g. the last commit's, for the "before" column), sends the same derandomized examples
over HTTP and gRPC, and counts per status code: answers, dropped connections (the next request on the
same keep-alive connection failed), crashes (the pid changed or died) and the peak RSS growth. Writes
the table under ``## Reliability: fuzz`` (the column for ``--label`` is replaced, others are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2_grpc as pb_grpc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "contract"))
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
from serving_helpers import save_iris_model, start_server  # noqa: E402
from v2_fuzz import GOOD_JSON, GRPC_FAILURES, HttpProbe, Watch, good_grpc_request, grpc_requests, http_cases  # noqa: E402

from _results import RESULTS, run_context, write_section  # noqa: E402

SECTION = "## Reliability: fuzz"
STATE = HERE / "fuzz_v2_counts.json"  # the counts of each label, so that a later run can rebuild the table
MAX_BYTES = 1024 * 1024


def fuzz(server, examples: int) -> dict[str, Counter]:
    watch = Watch(server.proc.pid)
    http_codes: Counter = Counter()
    grpc_codes: Counter = Counter()
    probe = HttpProbe(server.http_url, "iris")
    run = settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))

    def alive() -> bool:
        try:
            watch.check_alive("")
            return True
        except AssertionError:
            return False

    @run
    @given(case=http_cases())
    def one_http(case):
        if not alive():
            http_codes["server down"] += 1
            return
        try:
            status, _ = probe.send(case)
        except AssertionError:
            http_codes["dropped connection"] += 1
            probe.conn = probe._connect()
            return
        http_codes[str(status)] += 1
        try:
            probe.good("")
        except AssertionError:
            http_codes["then: dropped / failed"] += 1
            probe.conn = probe._connect()

    @run
    @given(request=grpc_requests("iris"))
    def one_grpc(request):
        if not alive():
            grpc_codes["server down"] += 1
            return
        try:
            stub.ModelInfer(request, timeout=30)
            grpc_codes["OK"] += 1
        except grpc.RpcError as exc:
            grpc_codes[exc.code().name + (" (failure)" if exc.code() in GRPC_FAILURES else "")] += 1

    one_http()
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        one_grpc()
        stub.ModelInfer(good_grpc_request("iris"), timeout=30)
    probe.conn.request("POST", "/v2/models/iris/infer", body=GOOD_JSON, headers={"Content-Type": "application/json"})
    assert probe.conn.getresponse().status == 200
    alive()
    growth = (watch.peak_rss - watch.baseline_rss) // 2**20
    return {"http": http_codes, "grpc": grpc_codes, "rss_growth_mib": Counter({"MiB": growth})}


def table(runs: dict[str, dict]) -> str:
    labels = sorted(runs, key=lambda k: (k != "before", k))
    lines = []
    for transport in ("http", "grpc"):
        keys = sorted({k for r in runs.values() for k in r[transport]}, key=lambda k: (not k[0].isdigit(), k))
        lines += [f"**{transport.upper()}** ({runs[labels[0]]['examples']} examples)", "",
                  "| answer | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {k} | " + " | ".join(str(runs[lb][transport].get(k, 0)) for lb in labels) + " |" for k in keys]
        lines.append("")
    lines.append("| peak RSS growth (MiB) | " + " | ".join(str(runs[lb]["rss_growth_mib"]["MiB"]) for lb in labels)
                 + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--label", default="after")
    parser.add_argument("--pythonpath", default=None, help="a platform/ directory to run the server from")
    args = parser.parse_args()
    env_path = os.environ.get("PYTHONPATH")
    if args.pythonpath:
        os.environ["PYTHONPATH"] = args.pythonpath + (os.pathsep + env_path if env_path else "")
    with tempfile.TemporaryDirectory() as tmp:
        model = save_iris_model(Path(tmp) / "model", C=1.0)
        server = start_server("iris", str(model), Path(tmp) / "server.log", version="1",
                              extra_args=["--max-request-bytes", str(MAX_BYTES)])
        try:
            server.wait_ready("iris", timeout=300)
            counts = fuzz(server, args.examples)
        finally:
            server.stop()
            if args.pythonpath:
                os.environ.pop("PYTHONPATH") if env_path is None else os.environ.update(PYTHONPATH=env_path)
    runs = json.loads(STATE.read_text()) if STATE.exists() else {}
    runs[args.label] = {"examples": args.examples, **{k: dict(v) for k, v in counts.items()}}
    STATE.write_text(json.dumps(runs, indent=1))
    body = "\n\n".join([
        run_context(),
        "The derandomized request space of `tests/contract/v2_fuzz.py` (mutated iris requests, junk JSON, random "
        "bytes, nesting up to 150,000 deep, the binary extension with wrong lengths, negative / boolean / huge "
        "shapes up to 2^64, NaN/Infinity/null/out-of-range values, lower-case datatypes, wrong content types, "
        "unknown versions and outputs) against one kserve-runtime model server (`--max-request-bytes 1048576`), "
        "counted by answer: `bench/fuzz_v2.py --label LABEL [--pythonpath OLD_CHECKOUT/platform]`. "
        "\"then: dropped / failed\" counts examples after which a good request on the same keep-alive "
        "connection failed; \"(failure)\" marks gRPC codes that are a server failure. "
        "The triton runtime runs the same cases in `tests/contract/test_fuzz_v2.py` (see below).",
        table(runs),
    ])
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    marker = "<!-- fuzz-triton -->"
    if marker in existing:  # keep the hand-written triton part of the section
        start = existing.index(marker)
        end = existing.find("\n## ", start)
        body += "\n\n" + existing[start: end if end != -1 else len(existing)].strip()
    write_section(SECTION, body)
    print(table(runs))


if __name__ == "__main__":
    main()
