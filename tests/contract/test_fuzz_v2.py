"""A property-based fuzzer over the V2 HTTP and gRPC request space, against both runtimes (issue 13).

Hypothesis draws requests from tests/contract/v2_fuzz.py (mutated good requests, junk JSON, random bytes,
deep nesting, the binary extension with wrong lengths, huge and negative shapes, NaN/Infinity/null and
out-of-range values, wrong datatypes and content types, unknown versions and outputs) and sends them to the
contract platform's kserve and triton deployments. Each example must be answered with no 5xx (gRPC: no
INTERNAL/UNKNOWN/UNAVAILABLE), a 4xx must carry a JSON ``error``, the keep-alive connection must stay
usable unless the server announced ``Connection: close``, and a good request must succeed right after.
Over the whole run the server keeps its pid and start time (no crash, no restart) and the resident memory
of its process tree (from /proc) stays within a bound.

A triton deployment that serves inference over gRPC only answers every HTTP inference with a 403 that
says so; the same cases then check that nothing else (no 5xx, crash, dropped connection) happens.
One known difference is counted, not failed: tritonserver's HTTP front end answers its own JSON errors
(malformed JSON, a missing ``inputs``, data that does not match its shape) with a 500 and one of the
messages of ``v2_fuzz.TRITON_FRONTEND_JSON_500`` (see there why no option or config can change it). Any
other 5xx from Triton fails the test.

The number of examples is bounded (``FUZZ_EXAMPLES`` per test, derandomized so that ``make test`` is
repeatable); ``MLPLANE_FUZZ_EXAMPLES`` runs more.
"""

from __future__ import annotations

import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from v2_fuzz import (
    HttpProbe,
    Watch,
    check_grpc_answer,
    check_http_answer,
    good_grpc_request,
    grpc_requests,
    http_cases,
)

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("MLPLANE_FUZZ_EXAMPLES", "150"))
#: How much the server's process tree may grow over a fuzz run (the platform caps requests at 1 MiB).
RSS_GROWTH_LIMIT = 512 * 1024 * 1024
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
RUNTIMES = ["kserve", "triton"]


@pytest.fixture(params=RUNTIMES)
def dep(request, deployments) -> dict:
    return {**deployments[request.param], "runtime": request.param}


def _check_memory(watch: Watch) -> None:
    growth = watch.peak_rss - watch.baseline_rss
    assert growth < RSS_GROWTH_LIMIT, (
        f"the server's resident memory grew by {growth / 2**20:.0f} MiB "
        f"(from {watch.baseline_rss / 2**20:.0f} MiB) during the fuzz run")


def test_fuzz_http(dep):
    watch = Watch(dep["pid"])
    probe = HttpProbe(dep["url"], dep["name"])

    triton = dep["runtime"] == "triton"
    if probe.detect_closed_inference():  # HTTP inference served over gRPC only: every answer must still be a 4xx
        assert triton, "the kserve runtime always serves HTTP inference"

    @FUZZ
    @given(case=http_cases())
    def one(case):
        status, body = probe.send(case)
        watch.check_alive(case.describe())
        watch.codes[check_http_answer(case, status, body, triton=triton)] += 1
        probe.good(case.describe())

    one()
    watch.check_alive("the fuzz run")
    _check_memory(watch)
    assert sum(watch.codes.values()) >= FUZZ_EXAMPLES // 2, watch.codes
    print(f"\n{dep['name']} HTTP status codes: {dict(sorted(watch.codes.items()))}")


def test_fuzz_grpc(dep):
    watch = Watch(dep["pid"])
    with grpc.insecure_channel(dep["grpc"]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        @FUZZ
        @given(request=grpc_requests(dep["name"]))
        def one(request):
            try:
                stub.ModelInfer(request, timeout=60)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            watch.codes[code.name] += 1
            watch.check_alive(str(request)[:500])
            check_grpc_answer(request, code, details)
            assert stub.ModelInfer(good_grpc_request(dep["name"]), timeout=60).outputs, "a good request failed"

        one()
    watch.check_alive("the fuzz run")
    _check_memory(watch)
    print(f"\n{dep['name']} gRPC status codes: {dict(sorted(watch.codes.items()))}")
