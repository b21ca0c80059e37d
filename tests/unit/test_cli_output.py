"""One output option and one exit-code scheme across the CLI: `-o table|yaml|json`, 2 for bad input, 1 for failures.

`mlplane ingest`/`eval` took `--json` before; they take `-o` like every other command. Their JSON output
against a real platform is checked in tests/rag (test_ingest.py, test_eval.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from mlplane.cli.main import app
from mlplane.cli.toolkit import EXIT_INPUT, EXIT_RUNTIME, fail

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "rag" / "corpus"


def mlplane(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLPLANE_STATE_DIR": str(tmp_path / ".mlplane"), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mlplane", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _options(*path: str) -> set[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_exit_codes():
    assert (EXIT_RUNTIME, EXIT_INPUT) == (1, 2)
    assert fail("bad input").exit_code == EXIT_INPUT
    assert fail("it broke", EXIT_RUNTIME).exit_code == EXIT_RUNTIME


@pytest.mark.parametrize("path", [("ingest",), ("eval",), ("status",), ("up",), ("deploy",), ("promote",),
                                  ("validate",), ("render",), ("keys", "list"), ("keys", "secret")])
def test_every_printing_command_takes_dash_o(path):
    options = _options(*path)
    assert {"-o", "--output"} <= options and "--json" not in options


@pytest.mark.parametrize("command", ["ingest", "eval"])
def test_json_flag_is_gone(tmp_path, command):
    proc = mlplane(tmp_path, command, "--collection", "docs", "--json")
    assert proc.returncode == 2 and "--json" in proc.stderr


def test_ingest_takes_o_json_and_a_failure_exits_1(tmp_path):
    # Valid input, no platform running: the vector store is missing, a failure while carrying it out.
    proc = mlplane(tmp_path, "ingest", str(CORPUS), "--collection", "docs", "-o", "json")
    assert proc.returncode == 1 and "no vector store is running" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("args, needle", [
    (["ingest", str(CORPUS), "--collection", "docs", "-o", "xml"], "'xml' is not one of"),
    (["ingest", str(CORPUS), "--collection", "Bad Name!"], "--collection"),
    (["ingest", str(CORPUS), "--collection", "docs", "--chunk-size", "10", "--chunk-overlap", "20"],
     "--chunk-size/--chunk-overlap"),
    (["eval", "--collection", "docs", "--qa", "missing.yaml", "-o", "json"], "--qa"),
    (["keys", "create", "k", "--rps", "0"], "--rps"),
    (["keys", "revoke", "nobody"], "nobody"),
])
def test_bad_input_exits_2(tmp_path, args, needle):
    proc = mlplane(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_no_platform_is_a_failure_and_still_prints_json(tmp_path):
    proc = mlplane(tmp_path, "status", "-o", "json")
    assert proc.returncode == 1 and "no platform is running" in proc.stderr
    assert json.loads(proc.stdout)["phase"] == "stopped"


def test_keys_list_in_every_format(tmp_path):
    assert mlplane(tmp_path, "keys", "create", "ci").returncode == 0
    as_json = json.loads(mlplane(tmp_path, "keys", "list", "-o", "json").stdout)
    as_yaml = yaml.safe_load(mlplane(tmp_path, "keys", "list", "-o", "yaml").stdout)
    assert as_json == as_yaml and [k["name"] for k in as_json if not k["system"]] == ["ci"]
    assert "ci" in mlplane(tmp_path, "keys", "list").stdout
    secret = json.loads(mlplane(tmp_path, "keys", "secret", "-o", "json").stdout)
    assert secret["kind"] == "Secret" and yaml.safe_load(mlplane(tmp_path, "keys", "secret").stdout) == secret
