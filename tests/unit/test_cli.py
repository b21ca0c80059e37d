"""The CLI's contract without a running platform: exit codes, one-line causes, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from mlplane import __version__
from mlplane.cli.main import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
COMMANDS = sorted(typer.main.get_command(app).commands)


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPLANE_STATE_DIR": str(tmp_path / ".mlplane"), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mlplane", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr


def test_version(tmp_path):
    assert run(tmp_path, "version").stdout.strip() == f"mlplane {__version__}"


def test_every_command_has_help(tmp_path):
    top = run(tmp_path, "--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        sub = run(tmp_path, command, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, command


def test_validate_good_file(tmp_path):
    proc = run(tmp_path, "validate", "-f", str(FIXTURES / "good" / "multi.yaml"))
    assert proc.returncode == 0 and "valid" in proc.stdout


def test_validate_prints_documents_as_json(tmp_path):
    proc = run(tmp_path, "validate", "-f", str(FIXTURES / "good" / "minimal_deployment.yaml"), "-o", "json")
    assert proc.returncode == 0 and '"kind": "ModelDeployment"' in proc.stdout


def test_validate_bad_file_names_file_path_value_and_allowed(tmp_path):
    proc = run(tmp_path, "validate", "-f", str(FIXTURES / "bad" / "bad_runtime.yaml"))
    assert_clean_failure(proc, 2, "bad_runtime.yaml", "spec.runtime", "tensorflow", "kserve")


def test_validate_missing_file(tmp_path):
    assert_clean_failure(run(tmp_path, "validate", "-f", str(tmp_path / "nope.yaml")), 2, "nope.yaml")


def test_up_with_invalid_platform_exits_2_and_starts_nothing(tmp_path):
    bad = tmp_path / "platform.yaml"
    bad.write_text("apiVersion: mlplane.io/v1alpha1\nkind: Platform\nmetadata: {name: p}\n"
                   "spec:\n  tracking: {mode: external}\n")
    assert_clean_failure(run(tmp_path, "up", "-f", str(bad)), 2, "spec.tracking")
    assert not (tmp_path / ".mlplane" / "state.json").exists()


@pytest.mark.parametrize("args, needle", [
    (("status",), "no platform is running"),
    (("deploy", "-f", str(FIXTURES / "good" / "minimal_deployment.yaml")), "no platform is running"),
    (("undeploy", "iris"), "no platform is running"),
    (("promote", "iris", "--version", "2"), "no platform is running"),
    (("logs", "iris"), "no log for 'iris'"),
])
def test_commands_need_a_running_platform(tmp_path, args, needle):
    assert_clean_failure(run(tmp_path, *args), 1, needle)


@pytest.mark.parametrize("args, needles", [
    (("deploy",), ("nothing to deploy",)),
    (("deploy", "x", "--model", "models:/"), ("spec.model",)),
    (("deploy", "Bad_Name", "--model", "models:/iris/1"), ("metadata.name",)),
    (("deploy", "-f", str(FIXTURES / "good" / "minimal_platform.yaml")), ("no ModelDeployment",)),
    (("promote", "iris", "--version", "two"), ("--version", "positive integer")),
])
def test_usage_errors_exit_2(tmp_path, args, needles):
    assert_clean_failure(run(tmp_path, *args), 2, *needles)


def test_down_without_platform_is_harmless(tmp_path):
    proc = run(tmp_path, "down")
    assert proc.returncode == 0 and "No platform was running" in proc.stdout


def test_render_a_storage_uri_deployment_needs_no_registry(tmp_path):
    import yaml

    spec = tmp_path / "d.yaml"
    spec.write_text("apiVersion: mlplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris, namespace: ml}\n"
                    "spec: {model: 's3://models/iris/1', runtime: kserve, resources: {gpus: 1}}\n")
    proc = run(tmp_path, "render", "-f", str(spec), "--platform", str(FIXTURES / "good" / "full_platform.yaml"))
    assert proc.returncode == 0, proc.stderr
    objects = list(yaml.safe_load_all(proc.stdout))
    isvc = next(o for o in objects if o["kind"] == "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/iris/1"
    assert isvc["metadata"]["namespace"] == "ml"
    assert predictor["tolerations"] and predictor["nodeSelector"]
    assert {o["kind"] for o in objects} >= {"InferenceService", "PodDisruptionBudget"}


def test_render_of_a_registry_model_without_mlflow_says_what_to_do(tmp_path):
    env_free = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    args = ["render", "-f", str(FIXTURES / "good" / "minimal_deployment.yaml")]
    proc = subprocess.run([sys.executable, "-m", "mlplane", *args], capture_output=True, text=True, timeout=120,
                          env={**env_free, "MLPLANE_STATE_DIR": str(tmp_path / ".mlplane"), "COLUMNS": "200"})
    assert_clean_failure(proc, 1, "--tracking-uri", "mlplane up")
