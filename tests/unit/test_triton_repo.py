"""The pure Triton model-repository generation of `runtime: triton` (mlplane.triton.repository)."""

from __future__ import annotations

import json

import pytest

from mlplane.core.signature import TensorMeta
from mlplane.spec.deployment import ModelDeploymentSpec
from mlplane.spec.platform import Platform
from mlplane.triton.repository import (
    MODEL_PY,
    TritonRepoError,
    config_pbtxt,
    repository_files,
    triton_datatype,
)

IRIS_IN = [TensorMeta(n, "FP64", (-1,)) for n in ("sepal_length", "sepal_width")]
IRIS_OUT = [TensorMeta("output-0", "INT64", (-1,))]


def spec(**fields) -> ModelDeploymentSpec:
    return ModelDeploymentSpec(model="models:/iris/3", runtime="triton", **fields)


def test_unbatched_config_keeps_the_signature_shapes():
    text = config_pbtxt("iris", "3", IRIS_IN, IRIS_OUT, spec())
    assert text.splitlines()[1:] == [
        'name: "iris"',
        'backend: "python"',
        "max_batch_size: 0",
        "version_policy: { specific: { versions: [ 3 ] } }",
        "input [",
        '  { name: "sepal_length" data_type: TYPE_FP64 dims: [ -1 ] },',
        '  { name: "sepal_width" data_type: TYPE_FP64 dims: [ -1 ] }',
        "]",
        "output [",
        '  { name: "output-0" data_type: TYPE_INT64 dims: [ -1 ] }',
        "]",
        "instance_group [ { count: 1 kind: KIND_CPU } ]",
    ]
    assert "dynamic_batching" not in text


def test_batching_makes_the_leading_dimension_the_batch_and_columns_n_by_1():
    tensor_in = [TensorMeta("pixels", "FP32", (-1, 28, 28))]
    s = spec(batching={"maxBatchSize": 32, "maxLatencyMs": 2.5, "preferredBatchSizes": [8, 16]}, instances=3)
    text = config_pbtxt("mnist", "7", tensor_in, IRIS_OUT, s)
    assert "max_batch_size: 32" in text
    assert '{ name: "pixels" data_type: TYPE_FP32 dims: [ 28, 28 ] }' in text
    assert '{ name: "output-0" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }' in text
    assert "dynamic_batching {\n  preferred_batch_size: [ 8, 16 ]\n  max_queue_delay_microseconds: 2500\n}" in text
    assert "instance_group [ { count: 3 kind: KIND_CPU } ]" in text
    default = config_pbtxt("iris", "1", IRIS_IN, IRIS_OUT, spec(batching={"maxBatchSize": 4, "maxLatencyMs": 1}))
    assert "preferred_batch_size: [ 4 ]" in default


def test_gpus_give_a_gpu_instance_group():
    text = config_pbtxt("iris", "1", IRIS_IN, IRIS_OUT, spec(resources={"gpus": 1}, instances=2))
    assert "instance_group [ { count: 2 kind: KIND_GPU } ]" in text


@pytest.mark.parametrize(("v2", "triton"), [
    ("FP64", "TYPE_FP64"), ("FP32", "TYPE_FP32"), ("INT64", "TYPE_INT64"), ("INT32", "TYPE_INT32"),
    ("BOOL", "TYPE_BOOL"), ("BYTES", "TYPE_STRING"), ("UINT8", "TYPE_UINT8"), ("FP16", "TYPE_FP16"),
])
def test_datatype_mapping(v2, triton):
    assert triton_datatype(v2) == triton


def test_string_inputs_are_declared_as_strings():
    text = config_pbtxt("m", "1", [TensorMeta("city", "BYTES", (-1,))], IRIS_OUT, spec())
    assert '{ name: "city" data_type: TYPE_STRING dims: [ -1 ] }' in text


def test_repository_files_layout_and_version_directory():
    files = repository_files("iris", "3", "models:/iris/3", IRIS_IN, IRIS_OUT, spec())
    assert sorted(files) == ["iris/3/model.json", "iris/3/model.py", "iris/config.pbtxt"]
    assert json.loads(files["iris/3/model.json"]) == {"model_uri": "models:/iris/3", "version": "3"}
    assert files["iris/3/model.py"] == MODEL_PY
    assert "from mlplane.serving.triton_backend import TritonPythonModel" in MODEL_PY
    compile(MODEL_PY, "model.py", "exec")
    # A plain storage URI has no registry version: Triton's version directory is 1.
    plain = repository_files("m", "", "s3://bucket/model", IRIS_IN, IRIS_OUT, spec())
    assert "m/1/model.py" in plain and "versions: [ 1 ]" in plain["m/config.pbtxt"]


@pytest.mark.parametrize(("inputs", "outputs", "fields", "message"), [
    ([], IRIS_OUT, {}, "has no input signature.*runtime: kserve"),
    (IRIS_IN, [], {}, "has no output signature"),
    (IRIS_IN, [TensorMeta("label", "BYTES", (-1,))], {}, "output 'label' is BYTES.*runtime: kserve"),
    ([TensorMeta("x", "FP64", ())], IRIS_OUT, {}, "input 'x' is a scalar"),
    ([TensorMeta("x", "FP64", (4, 3))], IRIS_OUT, {"batching": {"maxBatchSize": 4, "maxLatencyMs": 1}},
     "input 'x' has shape \\[4, 3\\], with no variable first dimension"),
    ([TensorMeta("x", "COMPLEX", (-1,))], IRIS_OUT, {},
     "input 'x' has V2 datatype 'COMPLEX', which has no Triton data type"),
])
def test_signatures_triton_cannot_express_are_refused_with_a_clear_error(inputs, outputs, fields, message):
    with pytest.raises(TritonRepoError, match=message) as info:
        repository_files("m", "1", "models:/m/1", inputs, outputs, spec(**fields))
    assert isinstance(info.value, ValueError)
    assert "models:/m/1" in str(info.value)


def test_preferred_batch_sizes_are_validated():
    with pytest.raises(ValueError, match=r"preferredBatchSizes \[64\] must not exceed maxBatchSize \(32\)"):
        spec(batching={"maxBatchSize": 32, "maxLatencyMs": 1, "preferredBatchSizes": [8, 64]})
    with pytest.raises(ValueError):
        spec(instances=0)


def test_triton_runtime_plans_a_loopback_tritonserver_and_its_repository(tmp_path):
    from mlplane.runtime.local.paths import StatePaths
    from mlplane.runtime.local.plan import Endpoint, ResolvedModel
    from mlplane.runtime.local.runtimes import ServingContext, Signature, runtime_for
    from mlplane.spec import ModelDeployment

    triton = runtime_for("triton")
    platform = Platform.model_validate({"metadata": {"name": "local"},
                                       "spec": {"serving": {"maxRequestBytes": 1024, "gracePeriodSeconds": 5}}})
    ctx = ServingContext(StatePaths(tmp_path), "http://127.0.0.1:5000", platform)
    model = ResolvedModel(uri="models:/iris/3", version="3")
    proc = triton.process(ctx, "iris", model, Endpoint("127.0.0.1", 8000, 8001, 8002))
    assert proc.argv[0].endswith("tritonserver") and proc.ready_url == "http://127.0.0.1:8000/v2/models/iris/ready"
    for flag in ("--model-control-mode=explicit", "--load-model=iris", "--http-address=127.0.0.1",
                 "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", "--metrics-port=8002",
                 f"--model-repository={tmp_path / 'triton' / 'iris' / 'models'}"):
        assert flag in proc.argv
    assert proc.env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert proc.env["MLPLANE_TRITON_SITE_PACKAGES"] and "nvidia_pytriton.libs" in proc.env["LD_LIBRARY_PATH"]
    assert triton.load_request("iris", model).path == "/v2/repository/models/iris/load"
    dep = ModelDeployment.model_validate({"metadata": {"name": "iris"},
                                          "spec": {"model": "models:/iris@champion", "runtime": "triton"}})
    prepared = triton.prepare(ctx, dep, model, Signature(IRIS_IN, IRIS_OUT))
    base = tmp_path / "triton" / "iris"
    assert set(prepared.files) == {base / "models/iris/config.pbtxt", base / "models/iris/3/model.py",
                                   base / "models/iris/3/model.json"}
    assert base / "backends/python/triton_python_backend_stub" in prepared.copies
    with pytest.raises(TritonRepoError, match="no input signature"):
        triton.prepare(ctx, dep, model, None)
    assert runtime_for("kserve").prepare(ctx, dep, model, None).files == {}


def test_read_only_outputs_are_copied_before_dlpack_export():
    """A pyfunc may return a view of its (read-only) input; DLPack refuses to export those."""
    import numpy as np

    from mlplane.serving.triton_backend import _exportable

    view = np.frombuffer(bytes(16), dtype=np.float32)
    exported = _exportable(view)
    assert exported.flags.writeable and np.array_equal(exported, view)
    np.from_dlpack(exported)
    owned = np.zeros(3)
    assert _exportable(owned) is owned


def test_cluster_repository_loads_the_model_from_its_own_directory():
    from mlplane.serving.triton_backend import model_location
    from mlplane.triton.repository import cluster_repository

    repo = cluster_repository("iris", "3", IRIS_IN, IRIS_OUT, spec())
    assert repo.model_dir == "iris/3/model" and repo.artifact_path.startswith("triton-repository/3/")
    assert json.loads(repo.files["iris/3/model.json"]) == {"model_uri": "model", "version": "3"}
    # The cluster's relative path resolves under the version directory; the local runtime's URIs stay as they are.
    assert model_location("/mnt/models/iris/3", "model") == "/mnt/models/iris/3/model"
    for uri in ("models:/iris/3", "s3://bucket/model", "/abs/model", "mlflow-artifacts:/1/x/artifacts"):
        assert model_location("/mnt/models/iris/3", uri) == uri
    assert cluster_repository("iris", "3", IRIS_IN, IRIS_OUT, spec(instances=2)).artifact_path != repo.artifact_path
