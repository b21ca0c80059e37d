"""The Ray and Triton images' entrypoints import from the mlplane wheel plus uv.lock's pinned extras only.

Their upstream bases (rayproject/ray, and the Triton of the nvidia-pytriton wheel on Python 3.11) cannot
be pulled here, so this installs what images/mlplane-ray.Containerfile and images/mlplane-triton.Containerfile
install — the wheel built from the source and the lock's pins of its extras — into a clean virtualenv
(offline, from this machine's uv cache) and imports what their entrypoints import there, outside the
repository: the RayService's `import_path` and the model.py the operator writes for Triton.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlplane._generated import REPO_ROOT
from mlplane.k8s.render import DEFAULT_RAY_IMPORT_PATH
from mlplane.triton.repository import MODEL_PY

UV = REPO_ROOT / ".venv" / "bin" / "uv"


def _uv(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> str:
    env = {**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never", **(env or {})}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([str(UV), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert proc.returncode == 0, f"uv {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--wheel", "--out-dir", str(out))
    (built,) = out.glob("mlplane-*.whl")
    return built


def clean_venv(root: Path, wheel: Path, extras: list[str]) -> Path:
    """A virtualenv with the lock's pins of `extras` and the wheel, nothing from the repository."""
    venv = root / "venv"
    _uv("venv", "--python", sys.executable, str(venv), cwd=root)
    python = venv / "bin" / "python"
    with_venv = {"UV_PROJECT_ENVIRONMENT": str(venv)}
    _uv("sync", "--frozen", "--no-install-project", *(f"--extra={e}" for e in extras), env=with_venv)
    _uv("pip", "install", "--python", str(python), "--no-deps", str(wheel), cwd=root)
    return python


def run_in(python: Path, cwd: Path, code: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**clean, "HOME": str(cwd), **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_the_ray_serve_app_imports_from_the_wheel_and_its_pinned_extras(tmp_path: Path, wheel: Path) -> None:
    python = clean_venv(tmp_path, wheel, ["ray", "rag", "vector"])
    module, attr = DEFAULT_RAY_IMPORT_PATH.split(":")
    out = run_in(python, tmp_path, (
        "import importlib, mlplane, ray, mlflow, pymilvus, sentence_transformers, transformers, gguf\n"
        f"app = getattr(importlib.import_module({module!r}), {attr!r})\n"
        "print(mlplane.__file__, ray.__version__, callable(app))\n"))
    where, ray_version, is_callable = out.split()
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel's mlplane, not the repository's
    assert ray_version.startswith("2.60.") and is_callable == "True"


def test_the_triton_model_py_imports_the_backend_from_the_wheel(tmp_path: Path, wheel: Path) -> None:
    python = clean_venv(tmp_path, wheel, ["triton"])
    site = run_in(python, tmp_path, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    dist = Path(site) / "pytriton" / "tritonserver"
    # What images/mlplane-triton.Containerfile lays out for Triton: the server, its Python backend, the 3.11 stub.
    backend = ("backends/python/libtriton_python.so", "backends/python/triton_python_backend_utils.py")
    for part in ("bin/tritonserver", *backend, "python_backend_stubs/3.11/triton_python_backend_stub"):
        assert (dist / part).is_file(), f"{dist / part} is missing from the nvidia-pytriton wheel"
    model_py = tmp_path / "model.py"
    check = "import mlplane, mlflow.pyfunc\nprint(mlplane.__file__, TritonPythonModel.__module__)\n"
    model_py.write_text(MODEL_PY + check, encoding="utf-8")
    # Triton's backend stub embeds the base interpreter (not the venv's): model.py adds the venv itself.
    home = next(line.split("=", 1)[1].strip() for line in (python.parent.parent / "pyvenv.cfg").read_text().splitlines()
                if line.startswith("home"))
    base_python = Path(home) / f"python{sys.version_info.major}.{sys.version_info.minor}"
    out = run_in(base_python, tmp_path, f"exec(open({str(model_py)!r}).read())",
                 env={"MLPLANE_TRITON_SITE_PACKAGES": site})
    where, module = out.split()
    assert where.startswith(str(tmp_path / "venv")) and module == "mlplane.serving.triton_backend"
