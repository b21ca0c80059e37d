"""One local platform for the contract suite: the same registered iris version on both runtimes.

``iris-k`` runs on ``runtime: kserve`` and ``iris-t`` on ``runtime: triton`` (no batching, so both take
columns of shape ``[n]``), behind a platform with a small ``serving.maxRequestBytes`` so that the limit
paths are cheap to reach. Session-scoped: every module of tests/contract shares it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane, status  # noqa: E402

from mlplane_pipelines.iris import train_and_register  # noqa: E402

RUNTIMES = {"kserve": "iris-k", "triton": "iris-t"}
#: serving.maxRequestBytes of the contract platform (both runtimes must hold it).
MAX_REQUEST_BYTES = 1024 * 1024
PLATFORM = f"""\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {{name: contract}}
spec:
  tracking: {{mode: embedded}}
  serving: {{host: 127.0.0.1, grpc: true, defaultRuntime: kserve, maxRequestBytes: {MAX_REQUEST_BYTES}}}
"""
DEPLOYMENT = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec: {{model: 'models:/iris/1', runtime: {runtime}}}
"""


@pytest.fixture(scope="session")
def contract_platform(tmp_path_factory) -> dict:
    """``{"state_dir": Path, "deployments": {runtime: status entry + "name"}}``."""
    base = tmp_path_factory.mktemp("contract")
    state_dir = base / ".mlplane"
    (base / "platform.yaml").write_text(PLATFORM)
    mlplane(state_dir, "up", "-f", str(base / "platform.yaml"))
    try:
        train_and_register(status(state_dir)["trackingUri"], name="iris")
        for runtime, name in RUNTIMES.items():
            path = base / f"{name}.yaml"
            path.write_text(DEPLOYMENT.format(name=name, runtime=runtime))
            mlplane(state_dir, "deploy", "-f", str(path))
        deps = status(state_dir)["deployments"]
        assert all(deps[n]["status"] == "ready" for n in RUNTIMES.values()), deps
        yield {"state_dir": state_dir,
               "deployments": {runtime: {**deps[name], "name": name} for runtime, name in RUNTIMES.items()}}
    finally:
        mlplane(state_dir, "down", check=False)


@pytest.fixture(scope="session")
def deployments(contract_platform) -> dict[str, dict]:
    """``{"kserve": ..., "triton": ...}``: each deployment's status entry (``url``, ``grpc``, ``pid``) + ``name``."""
    return contract_platform["deployments"]
