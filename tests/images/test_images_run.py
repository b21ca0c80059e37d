"""The operator and model-server images, built here offline, run the chart's exact container commands.

Each image is built from its Containerfile (tests/images/image_builder.py: a debootstrap Debian standing
in for python:3.11-slim-bookworm, uv.lock installed from this machine's uv cache). The Triton image and
the chart's `mlplane-triton` runtime: test_triton_image.py. The chart is rendered
with the real Helm engine, and the container of the operator Deployment and of the `mlplane-mlflow`
ClusterServingRuntime is run inside the image as the chart runs it: its command, args and env, as
UID 1000, with the volumes the chart mounts (each emptyDir an empty directory; the serving runtime's
/tmp read-only unless the chart mounts a volume there, as readOnlyRootFilesystem makes it) and nothing
else writable — after the run, nothing in the image's file system outside /tmp has changed.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import helm_python
import httpx
import image_builder as buildah
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlplane._generated import REPO_ROOT

_SECURITY = Path(__file__).resolve().parents[1] / "security"
if str(_SECURITY) not in sys.path:
    sys.path.insert(0, str(_SECURITY))
from triton_attacks import wait_until_ready  # noqa: E402  (polls any V2 server's readiness, not only Triton's)

CHART = REPO_ROOT / "charts" / "mlplane"
NAMESPACE = "mlplane"
# Where KServe's storage initializer leaves the model (the runtime's --model-uri).
MODEL_DIR = "/mnt/models"
# What the kubernetes client says when neither in-cluster config nor a kubeconfig exists.
NO_API_SERVER = "Invalid kube-config file. No configuration found."


def chart_objects() -> list[dict]:
    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render({}, name="mlplane", namespace=NAMESPACE, is_install=True)
    return [doc for path, text in manifests.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def find(objs: list[dict], kind: str, name: str) -> dict:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return copy.deepcopy(obj)


def container_env(container: dict, objs: list[dict]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then env (fieldRefs resolved)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find(objs, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = NAMESPACE
        else:
            raise AssertionError(f"the test cannot provide env {item} of {container['name']}")
    return env


@pytest.fixture(scope="module")
def objs() -> list[dict]:
    return chart_objects()


# --------------------------------------------------------------------------- the model server
@pytest.fixture(scope="module")
def serving_image() -> str:
    return buildah.build("mlplane-serving")


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """An MLflow sklearn model in a directory, as KServe's storage initializer leaves it in /mnt/models."""
    iris = load_iris(as_frame=True)
    x = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    model = LogisticRegression(max_iter=500).fit(x, iris.target)
    root = tmp_path_factory.mktemp("artifacts")
    path = root / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(x, model.predict(x)))
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # readable by UID 1000, as a storage initializer leaves it
    rows = x.iloc[[0, 60, 120]]
    return path, rows, model.predict(rows)


def serve_in_image(tmp_path: Path, objs: list[dict], serving_image: str, model_dir: Path, request: dict) -> dict:
    """Run the `mlplane-mlflow` runtime's container on `model_dir` as its pod does, send one V2 `request` once
    it is ready, and return the answer; afterwards nothing outside /tmp may have changed."""
    runtime = find(objs, "ClusterServingRuntime", "mlplane-mlflow")
    (container,) = runtime["spec"]["containers"]
    assert container["image"].rsplit("/", 1)[1].startswith("mlplane-serving:")
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and security["runAsUser"] == 1000
    name = "model"  # KServe fills {{.Name}} with the InferenceService's name
    argv = [*container["command"], *(a.replace("{{.Name}}", name) for a in container["args"])]
    assert f"--model-uri={MODEL_DIR}" in argv
    port = next(int(a.split("=", 1)[1]) for a in argv if a.startswith("--http-port="))

    with buildah.container(serving_image) as ctr:
        marker = tmp_path / "started"
        marker.touch()
        time.sleep(1.1)  # file times have a resolution: a change in this second must count as after it
        log = (tmp_path / "server.log").open("w")
        mounts, shm_size = buildah.pod_mounts(runtime["spec"], container, tmp_path, {MODEL_DIR: model_dir})
        proc = subprocess.Popen(
            buildah.run_argv(ctr, argv, env=container_env(container, objs),
                             user=f"{security['runAsUser']}:{security['runAsGroup']}",
                             mounts=mounts, shm_size=shm_size),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_ready(proc, f"{base}/v2/health/ready", tmp_path / "server.log", what="the image's model server")
            answer = httpx.post(f"{base}/v2/models/{name}/infer", json=request, timeout=30)
            assert answer.status_code == 200, answer.text
        finally:
            buildah.stop(proc)
            log.close()
        assert buildah.changed_outside_tmp(ctr, marker) == []
    return answer.json()


def test_the_serving_runtime_command_serves_a_model_inside_the_image(
        tmp_path: Path, objs: list[dict], serving_image: str,
        iris_model: tuple[Path, pd.DataFrame, np.ndarray]) -> None:
    model_dir, rows, expected = iris_model
    request = {"inputs": [{"name": column, "shape": [len(rows)], "datatype": "FP64",
                           "data": rows[column].tolist()} for column in rows.columns]}
    (out,) = serve_in_image(tmp_path, objs, serving_image, model_dir, request)["outputs"]
    assert out["data"] == expected.tolist() == [0, 1, 2]


# A pyfunc that, like joblib, numba or a Hugging Face cache, writes scratch files while it loads.
SCRATCH_MODEL = """
import os
import tempfile

import mlflow


class Doubler(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        with tempfile.NamedTemporaryFile() as scratch:  # TMPDIR or /tmp
            scratch.write(b"warm-up")
        cache = os.path.join(os.path.expanduser("~"), ".cache", "doubler")  # HOME
        os.makedirs(cache, exist_ok=True)

    def predict(self, context, model_input):
        return model_input * 2


mlflow.models.set_model(Doubler())
"""


def test_a_model_that_writes_scratch_files_while_loading_serves_in_the_image(
        tmp_path: Path, objs: list[dict], serving_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "doubler.py"
    code.write_text(SCRATCH_MODEL)
    model_dir = tmp_path / "artifacts" / "model"
    x = pd.DataFrame({"x": [1.0, 2.5]})
    monkeypatch.chdir(tmp_path)  # MLflow copies a uv project's lock file found in the working directory
    mlflow.pyfunc.save_model(str(model_dir), python_model=str(code), signature=infer_signature(x, x))
    for p in [model_dir.parent, *model_dir.parent.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    request = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.5]}]}
    (out,) = serve_in_image(tmp_path, objs, serving_image, model_dir, request)["outputs"]
    assert out["data"] == [2.0, 5.0]


# --------------------------------------------------------------------------- the operator
@pytest.fixture(scope="module")
def operator_image() -> str:
    return buildah.build("mlplane-operator")


def test_the_operator_command_starts_and_fails_only_for_want_of_an_api_server(
        tmp_path: Path, objs: list[dict], operator_image: str) -> None:
    deployment = find(objs, "Deployment", "mlplane-operator")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].rsplit("/", 1)[1].startswith("mlplane-operator:")
    env = container_env(container, objs)
    user = f"{pod['securityContext'].get('runAsUser', 1000)}:{pod['securityContext'].get('runAsGroup', 1000)}"
    argv = [*container["command"], *container.get("args", [])]
    config_py = ("import dataclasses, json; from mlplane_operator import OperatorConfig; "
                 "print(json.dumps(dataclasses.asdict(OperatorConfig.from_env())))")

    with buildah.container(operator_image) as ctr:
        marker = tmp_path / "started"
        marker.touch()
        time.sleep(1.1)
        mounts = [f"{buildah.empty_dir(tmp_path, 'tmp')}:/tmp"]
        # The configuration the operator reads from the chart's ConfigMap and Deployment, in the image.
        shown = subprocess.run(buildah.run_argv(ctr, ["python", "-c", config_py], env=env, user=user, mounts=mounts),
                               capture_output=True, text=True, timeout=300)
        assert shown.returncode == 0, shown.stderr[-4000:]
        config = json.loads(shown.stdout.strip().splitlines()[-1])
        assert config["tracking_uri"] == env["MLFLOW_TRACKING_URI"] == f"http://mlplane-mlflow.{NAMESPACE}.svc:5000"
        assert config["namespace"] == NAMESPACE
        assert config["resync_seconds"] == float(env["MLPLANE_RESYNC_SECONDS"])
        # The chart's command: `python -m mlplane_operator` registers every handler, runs kopf's startup
        # and finds no API server here (neither in-cluster nor a kubeconfig): it must say exactly that,
        # not fail on an import. kopf retries a failed startup, so the test stops it once it has said so.
        proc = subprocess.Popen(buildah.run_argv(ctr, argv, env=env, user=user, mounts=mounts), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None and not any(NO_API_SERVER in x for x in lines):
                time.sleep(0.5)
        finally:
            buildah.stop(proc)
            reader.join(timeout=30)
        output = "".join(lines)
        assert "Service host/port is not set" in output and NO_API_SERVER in output, output[-4000:]
        assert "ModuleNotFoundError" not in output and "ImportError" not in output, output[-4000:]
        assert buildah.changed_outside_tmp(ctr, marker) == []


def test_the_images_run_as_uid_1000_and_carry_their_labels(operator_image: str, serving_image: str) -> None:
    for tag, entrypoint in ((operator_image, ["python", "-m", "mlplane_operator"]),
                            (serving_image, ["python", "-m", "mlplane.serving"])):
        config = buildah.image_config(tag)["OCIv1"]["config"]
        assert config["User"] == "1000:1000"
        assert config["Entrypoint"][:len(entrypoint)] == entrypoint
        labels = config["Labels"]
        assert labels["org.opencontainers.image.source"] == "https://github.com/mlplane/mlplane"
        assert {"org.opencontainers.image.version", "org.opencontainers.image.revision"} <= set(labels)
        assert "HOME=/tmp" in config["Env"]
    # No compilers, uv or caches in the final image: it holds the venv and the base only.
    with buildah.container(serving_image) as ctr:
        root = Path(buildah.buildah("mount", ctr).strip())
        try:
            assert not (root / "usr/local/bin/uv").exists()
            # The build's cache mount leaves an empty mount point at most, never a file.
            assert [p for p in (root / "root/.cache").rglob("*") if not p.is_dir()] == []
            assert shutil.which("gcc", path=str(root / "usr/bin")) is None
            assert (root / "prod_venv/bin/python").exists() and not (root / "src").exists()
        finally:
            subprocess.run(buildah.buildah_cmd("umount", ctr), capture_output=True, check=False)
