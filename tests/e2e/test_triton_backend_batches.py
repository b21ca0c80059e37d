"""mlplane's Triton Python-backend model in a real tritonserver: batches, bad neighbours, outputs.

The repository is the one ``runtime: triton`` generates (:func:`mlplane.triton.repository.repository_files`:
config.pbtxt with dynamic batching, the model.py shim, model.json) for MLflow pyfunc models saved here,
served by the tritonserver of the nvidia-pytriton wheel with mlplane's backend, as the local runtime
runs it (no MLflow server: model.json names the saved model's directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow.pyfunc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from tritonclient.utils import InferenceServerException

from mlplane.core.signature import TensorMeta
from mlplane.runtime.local.process import free_port
from mlplane.runtime.local.runtimes import find_triton
from mlplane.spec.deployment import ModelDeploymentSpec
from mlplane.triton.repository import repository_files

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::UserWarning")]

IN = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "INPUT0")])
OUT = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "OUTPUT0")])
CLIENTS = 12


def _python_models() -> dict[str, mlflow.pyfunc.PythonModel]:
    """The served models, defined here so that cloudpickle saves them by value (the stub cannot import tests)."""

    class RefusesNegatives(mlflow.pyfunc.PythonModel):
        """INPUT0 + 1, computed in float64 (the signature says FP32); a negative value fails the call."""

        def predict(self, context, model_input, params=None):
            x = model_input["INPUT0"]
            if (x < 0).any():
                raise ValueError("negative input values are not allowed")
            return x.astype(np.float64) + 1

    class WrongOutputName(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return {"not-the-output": model_input["INPUT0"]}

    return {"checked": RefusesNegatives(), "misnamed": WrongOutputName()}


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("triton-backend")
    spec = ModelDeploymentSpec.model_validate({
        "model": "models:/m/1", "runtime": "triton",
        # A long queue delay: concurrent requests reliably land in one batch.
        "batching": {"maxBatchSize": 32, "preferredBatchSizes": [CLIENTS], "maxLatencyMs": 200},
    })
    inputs, outputs = [TensorMeta("INPUT0", "FP32", (-1, 4))], [TensorMeta("OUTPUT0", "FP32", (-1, 4))]
    for name, python_model in _python_models().items():
        saved = root / "saved" / name
        mlflow.pyfunc.save_model(str(saved), python_model=python_model, pip_requirements=["numpy"],
                                 signature=ModelSignature(inputs=IN, outputs=OUT))
        for path, text in repository_files(name, "1", str(saved), inputs, outputs, spec).items():
            (root / "models" / path).parent.mkdir(parents=True, exist_ok=True)
            (root / "models" / path).write_text(text)
    install = find_triton()
    backend = root / "backends" / "python"
    backend.mkdir(parents=True)
    for src in (install.python_backend / "libtriton_python.so",
                install.python_backend / "triton_python_backend_utils.py", install.stub):
        shutil.copy2(src, backend / src.name)
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(str(p) for p in install.library_path),
           "MLPLANE_TRITON_SITE_PACKAGES": os.pathsep.join(str(p) for p in install.site_packages)}
    log_path = root / "triton.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(install.binary), f"--model-repository={root / 'models'}", f"--backend-directory={root / 'backends'}",
             "--model-control-mode=explicit", "--load-model=checked", "--load-model=misnamed",
             "--disable-auto-complete-config", "--http-address=127.0.0.1", f"--http-port={http_port}",
             "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--allow-metrics=false"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a busy machine loads MLflow slowly
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tritonserver did not get ready: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"http": f"http://127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "log": log_path}
    finally:
        os.killpg(proc.pid, 15)  # the server and its Python-backend stubs
        proc.wait(timeout=60)


def _infer(grpc: str, model: str, rows: np.ndarray):
    client = grpcclient.InferenceServerClient(url=grpc)
    try:
        inp = grpcclient.InferInput("INPUT0", list(rows.shape), "FP32")
        inp.set_data_from_numpy(rows)
        result = client.infer(model, [inp])
        return result.get_response().outputs[0].datatype, result.as_numpy("OUTPUT0")
    finally:
        client.close()


def _batch_sizes(http: str, model: str) -> dict[int, int]:
    stats = httpx.get(f"{http}/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_one_bad_request_does_not_fail_its_batch_neighbours(triton):
    rows = [np.full((1, 4), float(i), dtype=np.float32) for i in range(CLIENTS)]
    rows[3] = -rows[3] - 1  # the bad one
    answers: dict[int, object] = {}
    barrier = threading.Barrier(CLIENTS)

    def client(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = _infer(triton["grpc"], "checked", rows[i])
        except InferenceServerException as exc:
            answers[i] = exc

    for _ in range(3):  # several rounds: at least one of them forms a batch with the bad request in it
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, answer in answers.items():
            if i == 3:
                assert isinstance(answer, InferenceServerException), answer
                assert "negative input values are not allowed" in answer.message()
            else:
                datatype, out = answer
                assert datatype == "FP32" and out.dtype == np.float32  # the signature's type, not float64
                np.testing.assert_array_equal(out, rows[i] + 1)
    assert max(_batch_sizes(triton["http"], "checked")) > 1, "the requests were never batched together"
    # The server keeps serving.
    np.testing.assert_array_equal(_infer(triton["grpc"], "checked", np.ones((2, 4), np.float32))[1], 2)


def test_outputs_are_checked_against_the_signature(triton):
    with pytest.raises(InferenceServerException) as info:
        _infer(triton["grpc"], "misnamed", np.ones((1, 4), np.float32))
    assert "OUTPUT0" in info.value.message() and "not-the-output" in info.value.message()


def test_log_is_free_of_dlpack_capsule_tracebacks(triton):
    for _ in range(5):
        _infer(triton["grpc"], "checked", np.ones((1, 4), np.float32))
    log = Path(triton["log"]).read_text()
    assert "PyCapsule_GetPointer" not in log
