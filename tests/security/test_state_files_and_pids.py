"""The local runtime's state files cannot turn the CLI against the user (issue 13, findings 8 and 10).

`mlplane down` signals only processes whose pid *and* start time match what the state file recorded, so a
hand-edited or stale state.json naming an unrelated process leaves that process alone. A state.json that
is not UTF-8, not JSON, or not the object the supervisor writes gives a clear message and is moved aside
(`state.json.corrupt-<time>`), never a traceback. Spec labels and `serving.host` are validated the way
Kubernetes (and a resolver) would: exit 2 with the field path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from platform_helpers import mlplane  # noqa: E402


@pytest.fixture
def bystander():
    """An unrelated process of this user's, as `down` could find one behind a recycled pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _state(pid: int, create_time: float | None) -> dict:
    entry = {"kind": "model-server", "status": "ready", "pid": pid, "createTime": create_time}
    return {"format": 1, "phase": "running", "supervisor": {"pid": pid, "createTime": create_time},
            "components": {"mlflow": dict(entry, kind="mlflow")}, "deployments": {"iris": entry}}


@pytest.mark.parametrize("recorded", ["another start time", "no start time", "a start time of the wrong type"])
def test_down_leaves_an_unrelated_process_that_state_json_names_alive(tmp_path, bystander, recorded):
    state_dir = tmp_path / ".mlplane"
    state_dir.mkdir()
    real = psutil.Process(bystander.pid).create_time()
    create_time = {"another start time": real - 3600.0, "no start time": None,
                   "a start time of the wrong type": str(real)}[recorded]
    (state_dir / "state.json").write_text(json.dumps(_state(bystander.pid, create_time)))
    out = mlplane(state_dir, "down")
    assert "No platform was running" in out.stdout
    assert "killed" not in out.stderr
    assert bystander.poll() is None and psutil.Process(bystander.pid).status() != psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(("content", "problem"), [
    (b"\xff\xfe{\x00", "is not UTF-8 text"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
    (b'{"phase": "running", "supervisor": "pid 1"}', "is not a state file mlplane wrote"),
    (b'{"deployments": {"iris": 7}}', "is not a state file mlplane wrote"),
    (b"{not json", "is not valid JSON"),
])
def test_a_broken_state_json_gives_a_message_and_is_moved_aside(tmp_path, content, problem):
    state_dir = tmp_path / ".mlplane"
    state_dir.mkdir()
    (state_dir / "state.json").write_bytes(content)
    out = mlplane(state_dir, "status", check=False)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert problem in out.stderr and "moved it to" in out.stderr, out.stderr
    (moved,) = state_dir.glob("state.json.corrupt-*")
    assert moved.read_bytes() == content  # kept for inspection
    assert not (state_dir / "state.json").exists()
    # The next commands start clean: no warning any more, and `down` does not trip over it either.
    again = mlplane(state_dir, "status", check=False)
    assert again.returncode == 1 and "no platform is running" in again.stderr and "warning" not in again.stderr
    assert "Traceback" not in mlplane(state_dir, "down").stderr


def test_down_with_a_broken_state_json_says_so_and_signals_nothing(tmp_path, bystander):
    state_dir = tmp_path / ".mlplane"
    state_dir.mkdir()
    (state_dir / "state.json").write_bytes(b"\x80" + json.dumps(_state(bystander.pid, None)).encode())
    out = mlplane(state_dir, "down")
    assert "Traceback" not in out.stderr
    assert "is not UTF-8 text" in out.stderr and "processes it named were not stopped" in out.stderr
    assert bystander.poll() is None


LABELED = """\
apiVersion: mlplane.io/v1alpha1
kind: {kind}
metadata:
  name: demo
  labels: {labels}
{spec}
"""
DEPLOYMENT_SPEC = "spec: {model: 'models:/iris/1'}"


@pytest.mark.parametrize(("labels", "message"), [
    ({"team": "x" * 90}, "label 'team': value 'xxxx"),
    ({"team": "-leading-dash"}, "must be a Kubernetes label value"),
    ({"bad key!": "ok"}, "label key 'bad key!' must be a Kubernetes label key"),
    ({"Example.com/team": "ok"}, "must be a Kubernetes label key"),
    ({"k" * 64: "ok"}, "must be a Kubernetes label key"),
])
@pytest.mark.parametrize("kind", ["Platform", "ModelDeployment"])
def test_labels_are_validated_as_kubernetes_does(tmp_path, kind, labels, message):
    spec = DEPLOYMENT_SPEC if kind == "ModelDeployment" else ""
    file = tmp_path / "spec.yaml"
    file.write_text(LABELED.format(kind=kind, labels=json.dumps(labels), spec=spec))
    out = mlplane(tmp_path, "validate", "-f", str(file), check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "metadata.labels" in out.stderr and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_huge_label_flood_is_refused_with_the_field_path(tmp_path):
    """The issue's 10 MB spec: 100k labels of 90 characters each."""
    file = tmp_path / "flood.yaml"
    labels = {f"l{i}": "v" * 90 for i in range(100_000)}
    file.write_text(LABELED.format(kind="ModelDeployment", labels=json.dumps(labels), spec=DEPLOYMENT_SPEC))
    assert file.stat().st_size > 10_000_000
    out = mlplane(tmp_path, "validate", "-f", str(file), check=False)
    assert out.returncode == 2 and "metadata.labels" in out.stderr and "at most 63 characters" in out.stderr


def test_valid_labels_and_node_selectors_pass(tmp_path):
    file = tmp_path / "ok.yaml"
    file.write_text(LABELED.format(
        kind="Platform", labels=json.dumps({"example.com/team": "ml-platform_1.2", "empty": "", "t": "x" * 63}),
        spec="spec:\n  gpuNodePool: {nodeSelector: {'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3'}}"))
    out = mlplane(tmp_path, "validate", "-f", str(file))
    assert "valid" in out.stdout


def test_a_bad_node_selector_is_refused(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text(LABELED.format(kind="Platform", labels="{}",
                                   spec="spec:\n  gpuNodePool: {nodeSelector: {'gpu type': 'a b'}}"))
    out = mlplane(tmp_path, "validate", "-f", str(file), check=False)
    assert out.returncode == 2 and "spec.gpuNodePool.nodeSelector" in out.stderr


@pytest.mark.parametrize("host", ["evil host", "127.0.0.1; rm -rf /", "http://127.0.0.1", "999.1.1.1", "a" * 300,
                                  "-bad.example"])
def test_serving_host_must_be_an_ip_address_or_host_name(tmp_path, host):
    file = tmp_path / "platform.yaml"
    file.write_text("apiVersion: mlplane.io/v1alpha1\nkind: Platform\nmetadata: {name: demo}\n"
                    f"spec: {{serving: {{host: {json.dumps(host)}}}}}\n")
    out = mlplane(tmp_path, "validate", "-f", str(file), check=False)
    assert out.returncode == 2, out.stdout
    assert "spec.serving.host" in out.stderr and "must be an IPv4 address" in out.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost", "model-host.internal"])
def test_serving_host_accepts_addresses_and_names(tmp_path, host):
    file = tmp_path / "platform.yaml"
    file.write_text("apiVersion: mlplane.io/v1alpha1\nkind: Platform\nmetadata: {name: demo}\n"
                    f"spec: {{serving: {{host: {json.dumps(host)}}}}}\n")
    assert "valid" in mlplane(tmp_path, "validate", "-f", str(file)).stdout
