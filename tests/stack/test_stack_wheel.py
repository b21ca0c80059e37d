"""`pip install 'mlplane[cluster]'` is enough for `mlplane cluster install`: the charts ship inside the wheel.

Builds the wheel from this tree (uv + hatchling, as a release would), checks every chart file is in
it under mlplane/_charts, and runs `mlplane cluster install --dry-run` from the unpacked wheel, away
from the source tree, with no --charts-dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mlplane._generated import REPO_ROOT

CHARTS = REPO_ROOT / "charts"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found (in .venv/bin or on PATH): `make venv` installs it")
    out = tmp_path_factory.mktemp("dist")
    # Offline: the build backend comes from the uv cache `make venv` filled (the tests run without a network).
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never"}
    proc = subprocess.run([uv, "build", "--wheel", "--out-dir", str(out), str(REPO_ROOT)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("mlplane-*.whl")
    return built


def test_every_chart_file_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "charts"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked, "git ls-files found no charts"
    missing = [p for p in tracked if "mlplane/_charts/" + p.removeprefix("charts/") not in names]
    assert missing == []
    assert "mlplane/_charts/mlplane-stack/values.yaml" in names


def test_the_cluster_extra_brings_helms_engine(wheel: Path) -> None:
    """The CLI's `cluster` commands import helm-python-sdk: the wheel's `cluster` extra (and `all`) requires it."""
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    lines = archive.read(metadata).decode().splitlines()
    assert "Provides-Extra: cluster" in lines
    helm = [line for line in lines if line.startswith("Requires-Dist: helm-python-sdk")]
    assert any("extra == 'cluster'" in line or 'extra == "cluster"' in line for line in helm), helm


def test_the_cli_finds_the_packaged_charts(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"),
           "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("MLPLANE_CHARTS_DIR", None)
    where = subprocess.run([sys.executable, "-c", "import mlplane; from mlplane.k8s import helm_plan; "
                            "print(mlplane.__file__); print(helm_plan.DEFAULT_CHARTS_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    module, charts = where.stdout.split()
    assert module.startswith(str(site)) and charts == str(site / "mlplane" / "_charts")
    proc = subprocess.run([sys.executable, "-m", "mlplane", "cluster", "install", "--dry-run"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "# phase 4/4 mlplane" in proc.stdout
    assert "# Release mlplane (chart mlplane 0.1.0), namespace mlplane" in proc.stdout
    assert "kind: ClusterServingRuntime" in proc.stdout
