"""`python -m mlplane.triton.server`, the cluster Triton's entrypoint, without starting a server:
it refuses a command line that sets the flags it owns (exit 2, with what to do), adds the same restricted-API
flags as the local runtime, and gives the generated model.py mlplane's site-packages.
(tests/security/test_triton_cluster_limits.py runs it in front of a real tritonserver.)"""

from __future__ import annotations

import os
import site
import subprocess
import sys

import pytest

from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import Endpoint, TritonInstall, triton_process
from mlplane.triton.args import TRITON_HTTP_INFERENCE_CLOSED, restricted_api_args
from mlplane.triton.repository import MODEL_PY
from mlplane.triton.server import refused_args, server_argv, server_env

CHART_ARGS = ["--model-store=/mnt/models", "--model-control-mode=none", "--http-port=8000", "--grpc-port=8001"]


def _entrypoint(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PATH": path} if path is not None else {})}
    return subprocess.run([sys.executable, "-m", "mlplane.triton.server", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize(("args", "message"), [
    (["--http-restricted-api=model-repository:k=v"], "sets --http-restricted-api itself"),
    (["--grpc-restricted-protocol", "model-repository:k=v"], "sets --grpc-restricted-protocol itself"),
    (["--http-restricted=inference:k=v"], "sets --http-restricted-api itself"),  # getopt's abbreviation
    (["--model-control-mode=explicit"], "accepts only --model-control-mode=none"),
    (["--model-control-mode", "poll"], "accepts only --model-control-mode=none"),
])
def test_a_command_line_setting_an_owned_flag_exits_2_with_what_to_do(args, message):
    done = _entrypoint(*CHART_ARGS, *args)
    assert done.returncode == 2 and message in done.stderr and "remove it" in done.stderr, done.stderr
    assert refused_args([*CHART_ARGS, *args]) is not None


def test_the_charts_kind_of_command_line_is_accepted():
    assert refused_args(CHART_ARGS) is None
    assert refused_args(["--model-control-mode", "NONE", "--model-store", "/m"]) is None


def test_without_tritonserver_on_path_it_exits_2_naming_the_image(tmp_path):
    done = _entrypoint(*CHART_ARGS, path=str(tmp_path))
    assert done.returncode == 2 and "tritonserver is not on PATH" in done.stderr
    assert "mlplane-triton" in done.stderr


def test_it_adds_the_local_runtimes_restricted_api_flags_with_its_own_keys(tmp_path):
    argv = server_argv("/usr/local/bin/tritonserver", CHART_ARGS, "ctl", "closed")
    assert argv[: 1 + len(CHART_ARGS)] == ["/usr/local/bin/tritonserver", *CHART_ARGS]
    assert argv[1 + len(CHART_ARGS):] == restricted_api_args("ctl", "closed")
    assert f"--http-restricted-api=inference:{TRITON_HTTP_INFERENCE_CLOSED}=closed" in argv
    # The local runtime's command line carries the very same flags (one function builds both).
    local = triton_process(StatePaths(tmp_path), "iris", Endpoint("127.0.0.1", 1, 2), "http://x", 5,
                           TritonInstall(tmp_path / "tritonserver", tmp_path, tmp_path, (), ()), "k3y")
    def categories(command: list[str] | tuple[str, ...]) -> set[str]:  # flag=categories, keys left out
        return {a.split(":", 1)[0] for a in command if "restricted" in a}

    assert categories(local.argv) == categories(argv) == {"--http-restricted-api=model-repository,logging,trace",
                                            "--http-restricted-api=inference",
                                            "--grpc-restricted-protocol=model-repository,logging,trace"}
    with pytest.raises(ValueError, match="empty one"):
        restricted_api_args("", "closed")


def test_model_py_finds_its_site_packages_where_they_are_also_the_stubs_own(tmp_path):
    """In the image the Python-backend stub finds the virtualenv's python first on PATH, so its own
    site-packages *are* MLPLANE_TRITON_SITE_PACKAGES; model.py dropped them ("No module named numpy")."""
    env = server_env({k: v for k, v in os.environ.items() if k != "MLPLANE_TRITON_SITE_PACKAGES"})
    assert env["MLPLANE_TRITON_SITE_PACKAGES"] == os.pathsep.join(site.getsitepackages())
    shim = MODEL_PY.replace("from mlplane.serving.triton_backend import TritonPythonModel", "import numpy")
    (tmp_path / "model.py").write_text(shim + "print(numpy.__name__)\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(tmp_path / "model.py")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "numpy", done.stderr[-2000:]
