"""End to end: the local runtime honours the Platform's `serving.defaultRuntime`, as the cluster does.

A Platform with `defaultRuntime: triton` and a deployment that names no runtime: `mlplane deploy` serves
it with a real tritonserver (its server metadata says so; Triton reports the registry version), from
the model repository written under the state dir, which `undeploy` removes.
"""

from __future__ import annotations

import httpx
import pytest
from platform_helpers import mlplane, status

from mlplane_pipelines.iris import train_and_register

pytestmark = pytest.mark.e2e

PLATFORM = """\
apiVersion: mlplane.io/v1alpha1
kind: Platform
metadata: {name: local}
spec:
  tracking: {mode: embedded}
  serving: {host: 127.0.0.1, defaultRuntime: triton}
"""
DEPLOYMENT = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata: {name: unnamed-runtime}
spec: {model: 'models:/iris@champion'}
"""


def test_a_deployment_naming_no_runtime_is_served_by_the_platforms_default(tmp_path) -> None:
    state_dir = tmp_path / ".mlplane"
    (tmp_path / "platform.yaml").write_text(PLATFORM)
    (tmp_path / "deployment.yaml").write_text(DEPLOYMENT)
    mlplane(state_dir, "up", "-f", str(tmp_path / "platform.yaml"))
    try:
        train_and_register(status(state_dir)["trackingUri"], name="iris", alias="champion")
        mlplane(state_dir, "deploy", "-f", str(tmp_path / "deployment.yaml"))
        dep = status(state_dir)["deployments"]["unnamed-runtime"]
        assert dep["status"] == "ready" and dep["servedVersion"] == "1" and dep["runtime"] == "triton"
        server = httpx.get(f"{dep['url']}/v2", timeout=30).json()
        assert server["name"] == "triton", server
        model = httpx.get(f"{dep['url']}/v2/models/unnamed-runtime", timeout=30).json()
        assert model["versions"] == ["1"], model
        repository = state_dir / "triton" / "unnamed-runtime"
        assert (repository / "models" / "unnamed-runtime" / "config.pbtxt").is_file()
        mlplane(state_dir, "undeploy", "unnamed-runtime")
        assert not repository.exists()
    finally:
        mlplane(state_dir, "down", check=False)
