"""Model control in the plans and on disk, without starting a platform: where the supervisor's load requests
go, what the model servers are told, and the permissions of the control socket."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import Endpoint, ResolvedModel, TritonInstall, kserve_process, triton_process
from mlplane.runtime.local.runtimes import ServingContext, runtime_for
from mlplane.serving.control import bind_control_socket, is_control_path
from mlplane.serving.settings import parse_args
from mlplane.spec.platform import Platform

MODEL = ResolvedModel(uri="models:/iris/2", version="2")
INSTALL = TritonInstall(Path("/t/bin/tritonserver"), Path("/t/backends/python"), Path("/t/stub"), (), ())


@pytest.mark.parametrize("path", ["/v2/repository/models/iris/load", "/v2/repository/models/iris/unload",
                                  "/v2//repository/models/iris/load/", "/V2/Repository/index", "/v2/repository"])
def test_every_spelling_of_a_repository_path_is_model_control(path):
    assert is_control_path(path)


@pytest.mark.parametrize("path", ["/v2/models/iris/infer", "/v2/health/ready", "/v2", "/v2/repositoryx"])
def test_data_plane_paths_are_not_model_control(path):
    assert not is_control_path(path)


def test_kserve_swaps_go_to_the_control_socket_and_triton_swaps_carry_the_key(tmp_path):
    paths = StatePaths(tmp_path)
    platform = Platform.model_validate({"metadata": {"name": "local"},
                                       "spec": {"serving": {"maxRequestBytes": 1024, "gracePeriodSeconds": 5}}})
    ctx = ServingContext(paths, "http://127.0.0.1:5000", platform, control_key="s3cret-key")
    kserve = runtime_for("kserve").load_request("iris", MODEL, ctx)
    assert kserve.socket == tmp_path / "control" / "iris.sock"
    argv = list(kserve_process(paths, "iris", MODEL, Endpoint("127.0.0.1", 1, 2), "http://x", 1024, 5).argv)
    assert argv[argv.index("--control-socket") + 1] == str(kserve.socket)
    triton = runtime_for("triton").load_request("iris", MODEL, ctx)
    assert triton.socket is None and triton.headers == {"mlplane-control-key": "s3cret-key"}
    assert "s3cret-key" not in repr(ctx) and "s3cret-key" not in repr(triton)


def test_triton_restricts_model_control_on_http_and_grpc(tmp_path):
    spec = triton_process(StatePaths(tmp_path), "iris", Endpoint("127.0.0.1", 1, 2), "http://x", 5, INSTALL, "k3y")
    assert "--http-restricted-api=model-repository,logging,trace:mlplane-control-key=k3y" in spec.argv
    assert "--grpc-restricted-protocol=model-repository,logging,trace:mlplane-control-key=k3y" in spec.argv
    # Without a key nobody can control it: a random one, different every time.
    a, b = (triton_process(StatePaths(tmp_path), "iris", Endpoint("127.0.0.1", 1, 2), "http://x", 5, INSTALL)
            for _ in range(2))
    restricted = [[x for x in s.argv if x.startswith("--http-restricted-api=")] for s in (a, b)]
    assert all(r and not r[0].endswith("=") for r in restricted) and restricted[0] != restricted[1]


def test_a_long_state_dir_gets_a_short_private_socket_path(tmp_path):
    deep = StatePaths(tmp_path / ("x" * 120))
    path = deep.control_socket("iris")
    assert len(str(path)) < 108 and path != StatePaths(tmp_path / ("y" * 120)).control_socket("iris")


def test_the_control_socket_is_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "control" / "iris.sock"
    path.parent.mkdir(mode=0o755)
    os.chmod(path.parent, 0o755)
    sock = bind_control_socket(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        sock.close()
    again = bind_control_socket(path)  # a stale socket of an earlier run is replaced
    again.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ValueError, match=r"--control-socket: .*iris.sock exists and is not a socket"):
        bind_control_socket(path)
    with pytest.raises(ValueError, match="longer than a Unix socket path may be"):
        bind_control_socket(tmp_path / ("z" * 120) / "iris.sock")


def test_the_cluster_command_line_has_no_control_listener():
    """charts/mlplane's ClusterServingRuntime: nothing to load through, anywhere."""
    settings = parse_args(["--name=iris", "--model-uri=/mnt/models", "--http-port=8080", "--grpc-port=8081"])
    assert settings.control_socket is None
