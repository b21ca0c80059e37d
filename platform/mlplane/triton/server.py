"""``python -m mlplane.triton.server <tritonserver args...>``: the cluster's Triton, protected.

The entrypoint of the chart's ClusterServingRuntime ``mlplane-triton`` (images/mlplane-triton.Containerfile).
It replaces itself (``exec``) with ``tritonserver`` from ``PATH`` (the image links the nvidia-pytriton
wheel's binary into /usr/local/bin), given the chart's and the InferenceService's arguments plus the
restricted-API flags the local runtime sets too (:func:`mlplane.triton.args.restricted_api_args`):

* model control (model-repository, logging, trace) on HTTP and gRPC needs a key drawn at random for this
  pod and never printed: nobody holds it, so nobody can load, unload or reconfigure the models that
  ``--model-control-mode=none`` loaded from /mnt/models at start;
* HTTP inference is closed (a 403 naming :data:`~mlplane.triton.args.TRITON_HTTP_INFERENCE_CLOSED`);
  clients infer over gRPC, the port KServe's Service serves (docs/triton-limits.md, "In the cluster").

A command line that already sets one of these flags, or a model-control mode other than ``none``, is
refused (exit 2) rather than merged: the server would otherwise run with whatever Triton makes of two
conflicting settings. ``MLPLANE_TRITON_SITE_PACKAGES`` (where the generated model.py finds mlplane,
MLflow and numpy) defaults to this interpreter's site-packages.
"""

from __future__ import annotations

import os
import secrets
import shutil
import site
import sys
from collections.abc import Mapping, Sequence

from mlplane.triton.args import OWNED_FLAGS, restricted_api_args

__all__ = ["BINARY", "main", "refused_args", "server_argv", "server_env"]

BINARY = "tritonserver"
_MODEL_CONTROL = "--model-control-mode"


def _options(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(option, value)`` for each ``--option[=value]`` of a tritonserver command line; a value given as
    the next argument (``--option value``, which Triton's getopt accepts too) is that argument."""
    out: list[tuple[str, str | None]] = []
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        option, eq, value = arg.partition("=")
        if eq:
            out.append((option, value))
        else:
            following = args[i + 1] if i + 1 < len(args) else ""
            out.append((option, None if following.startswith("-") else following or None))
    return out


def _names(option: str, flag: str) -> bool:
    """Whether ``option`` names ``flag``: the flag itself or a prefix Triton's getopt would expand to it."""
    return len(option) > 2 and flag.startswith(option)


def refused_args(args: Sequence[str]) -> str | None:
    """Why ``args`` cannot be given to the protected tritonserver; None when they can."""
    for option, value in _options(args):
        for flag in OWNED_FLAGS:
            if _names(option, flag):
                return (f"{option}: mlplane.triton.server sets {flag} itself (model control behind a "
                        "per-pod key, HTTP inference closed: docs/triton-limits.md); remove it from the "
                        "ServingRuntime's or the InferenceService's args")
        if _names(option, _MODEL_CONTROL) and (value or "").lower() != "none":
            return (f"{option}={value or ''}: the cluster's Triton serves the models in /mnt/models as loaded at "
                    f"start; mlplane.triton.server accepts only {_MODEL_CONTROL}=none (model control "
                    "is closed to everybody); remove it or set it to none")
    return None


def server_argv(binary: str, args: Sequence[str], control_key: str, inference_closed_value: str) -> list[str]:
    """The tritonserver command line: ``binary``, ``args``, then the restricted-API flags."""
    return [binary, *args, *restricted_api_args(control_key, inference_closed_value)]


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ``environ``, with ``MLPLANE_TRITON_SITE_PACKAGES`` defaulting to this
    interpreter's site-packages (the Python-backend stub ignores PYTHONPATH; model.py reads this)."""
    env = dict(environ)
    if not env.get("MLPLANE_TRITON_SITE_PACKAGES"):
        env["MLPLANE_TRITON_SITE_PACKAGES"] = os.pathsep.join(site.getsitepackages())
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    problem = refused_args(args)
    if problem:
        print(f"mlplane-triton: {problem}", file=sys.stderr)
        return 2
    binary = shutil.which(BINARY)
    if binary is None:
        print(f"mlplane-triton: {BINARY} is not on PATH ({os.environ.get('PATH', '')}); run the "
              "mlplane-triton image (images/mlplane-triton.Containerfile) or put the nvidia-pytriton wheel's "
              "tritonserver/bin on PATH", file=sys.stderr)
        return 2
    # Two keys nobody holds: model control and HTTP inference stay closed for the life of the pod.
    command = server_argv(binary, args, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(binary, command, server_env(os.environ))  # tritonserver becomes the container's process
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
