"""The cluster's Triton refuses what the local one refuses (issue 13: control apart from data; no single
request crashes or exhausts a server), with the chart's exact container.

A real tritonserver (the nvidia-pytriton wheel's 2.51) is started the way KServe starts the chart's
ClusterServingRuntime `mlplane-triton` for the InferenceService mlplane renders: the runtime's command
(`python -m mlplane.triton.server`) and args, the InferenceService's args and env appended
(tests/charts/triton_cluster.py), on a self-contained cluster model repository (`cluster_model_repository`, the
MLflow model in `<name>/1/model`, as the storage initializer downloads it to /mnt/models). Only what
the image provides differently here is rewritten: the ports (free loopback ports, bound to 127.0.0.1),
/mnt/models, the backend directory (the image's /opt/tritonserver/backends) and PATH (the image links
tritonserver into /usr/local/bin). MLPLANE_TRITON_SITE_PACKAGES is not set: the entrypoint supplies it.

Then: model control over HTTP and gRPC without the key, HTTP inference (the requests that crashed
Triton), gRPC shapes that do not match the data and a request over serving.maxRequestBytes are all
refused, and after each the same process answers a good gRPC request.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _helpers in (_TESTS / "charts", _TESTS / "k8s"):  # chart_helpers needs k8s_schema_helpers
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))

import grpc  # noqa: E402
import httpx  # noqa: E402
from triton_attacks import (  # noqa: E402
    BAD_SHAPES,
    CRASHERS,
    MODEL,
    cluster_model_repository,
    free_port,
    grpc_bad_shape_is_refused,
    grpc_over_max_request_bytes_is_refused,
    http_health_metadata_and_statistics_are_open,
    http_inference_is_refused,
    running,
)
from triton_cluster import predictor_container, triton_isvc, triton_runtime  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402

from mlplane.runtime.local.runtimes import find_triton  # noqa: E402
from mlplane.runtime.local.triton_control import grpc_model_load  # noqa: E402
from mlplane.triton.args import TRITON_CONTROL_HEADER  # noqa: E402

pytestmark = pytest.mark.e2e

MAX_REQUEST_BYTES = 1 << 20
MOUNT = "/mnt/models"


def _rewrite(args: list[str], ports: dict[int, int], repository: Path, backends: Path) -> list[str]:
    """The container's args with what differs here: ports, /mnt/models; plus loopback addresses and the backends."""
    out = []
    for arg in args:
        option, eq, value = arg.partition("=")
        if eq and option.endswith("-port") and int(value) in ports:
            arg = f"{option}={ports[int(value)]}"
        elif eq and value == MOUNT:
            arg = f"{option}={repository}"
        out.append(arg)
    return [*out, f"--backend-directory={backends}",
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]


def _image_layout(root: Path) -> tuple[Path, Path, list[str]]:
    """The image's /opt/tritonserver/backends, a PATH directory holding `tritonserver`, its library path."""
    install = find_triton()
    backends = root / "backends"
    (backends / "python").mkdir(parents=True)
    for source in (install.python_backend / "libtriton_python.so",
                   install.python_backend / "triton_python_backend_utils.py", install.stub):
        shutil.copy2(source, backends / "python" / source.name)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").symlink_to(install.binary)
    return backends, bin_dir, [str(p) for p in install.library_path]


@pytest.fixture(scope="module")
def cluster_triton(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-cluster")
    runtime, isvc = triton_runtime(), triton_isvc(MODEL, max_request_bytes=MAX_REQUEST_BYTES)
    container = predictor_container(runtime, isvc)
    ports = {p["containerPort"]: free_port() for p in container["ports"]}
    named = {p["name"]: ports[p["containerPort"]] for p in container["ports"]}
    backends, bin_dir, library_path = _image_layout(root)
    args = _rewrite(container["args"], ports, cluster_model_repository(root), backends)
    env = {k: v for k, v in os.environ.items() if k != "MLPLANE_TRITON_SITE_PACKAGES"}
    env.update({e["name"]: e["value"] for e in container["env"]})
    # The image's PATH: its virtualenv's python (mlplane installed), then tritonserver.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(bin_dir), env.get("PATH", "")])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    argv = [shutil.which(container["command"][0], path=env["PATH"]), *container["command"][1:], *args]
    http = f"http://127.0.0.1:{named['http1']}"
    with running(argv, env, root / "triton.log", http_url=http, grpc_address=f"127.0.0.1:{named['grpc']}",
                 metrics_url=f"http://127.0.0.1:{named['metrics']}/metrics") as server:
        yield {"server": server, "container": container, "ports": ports}


def test_the_entrypoint_became_tritonserver_with_keys_it_never_printed(cluster_triton):
    server = cluster_triton["server"]
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert Path(cmdline[0].decode()).name == "tritonserver"  # exec'd: the kubelet's signals reach Triton
    keys = [a.decode().rsplit("=", 1)[1] for a in cmdline if a.startswith((b"--http-restricted-api=",
                                                                           b"--grpc-restricted-protocol="))]
    assert len(keys) == 3 and all(len(k) >= 32 for k in keys) and len(set(keys)) == 2
    log = server.log.read_text(errors="replace")
    assert not [k for k in keys if k in log]
    # The key is what opens model control (nobody but this test, reading the pod's process, has it).
    index = httpx.post(f"{server.http_url}/v2/repository/index", json={}, timeout=10,
                       headers={TRITON_CONTROL_HEADER: keys[0]})
    assert index.status_code == 200 and [m["name"] for m in index.json()] == [MODEL]


def test_the_charts_probes_answer_on_the_http_port(cluster_triton):
    container, ports = cluster_triton["container"], cluster_triton["ports"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert httpx.get(f"http://127.0.0.1:{ports[get['port']]}{get['path']}", timeout=10).status_code == 200
    http_health_metadata_and_statistics_are_open(cluster_triton["server"], ["1"])


@pytest.mark.parametrize("action", ["load", "unload"])
@pytest.mark.parametrize("headers", [{}, {TRITON_CONTROL_HEADER: ""}, {TRITON_CONTROL_HEADER: "guess"}],
                         ids=["no key", "empty key", "wrong key"])
def test_http_model_control_without_the_key_is_refused(cluster_triton, action, headers):
    server = cluster_triton["server"]
    for path in (f"/v2/repository/models/{MODEL}/{action}", "/v2/repository/index"):
        r = httpx.post(f"{server.http_url}{path}", json={}, headers=headers, timeout=60)
        assert r.status_code == 403 and TRITON_CONTROL_HEADER in r.json()["error"], (path, r.text)
    server.still_serving()


def test_grpc_model_control_without_the_key_is_refused(cluster_triton):
    server = cluster_triton["server"]
    answer = asyncio.run(grpc_model_load(server.grpc, MODEL, {}, timeout=60))
    assert answer.status_code == 400 and "restricted" in answer.json()["error"]
    stub = pb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))
    wrong = (("triton-grpc-protocol-" + TRITON_CONTROL_HEADER, "guess"),)
    for call, request in ((stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=MODEL)),
                          (stub.RepositoryIndex, pb.RepositoryIndexRequest())):
        for metadata in ((), wrong):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=metadata, timeout=60)
            assert "restricted" in refused.value.details(), refused.value
    server.still_serving()


@pytest.mark.parametrize("body", list(CRASHERS.values()), ids=list(CRASHERS))
def test_http_inference_is_closed(cluster_triton, body):
    http_inference_is_refused(cluster_triton["server"], body)


@pytest.mark.parametrize("shape", list(BAD_SHAPES.values()), ids=list(BAD_SHAPES))
def test_grpc_checks_shape_against_the_data_before_allocating(cluster_triton, shape):
    grpc_bad_shape_is_refused(cluster_triton["server"], shape)


def test_grpc_request_over_the_platforms_max_request_bytes_is_refused(cluster_triton):
    grpc_over_max_request_bytes_is_refused(cluster_triton["server"], MAX_REQUEST_BYTES)
