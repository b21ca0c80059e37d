"""The Triton backend's per-request predict: the model sees what ``model.predict`` would hand it.

``pyfunc_predictor`` skips MLflow's per-call schema enforcement only where the decoder has already
done it (tensor signatures of numbers); these tests load real MLflow pyfunc models and compare what
the model receives and returns through both paths. The quiet DLPack hook is checked against the very
error numpy raises for a capsule the backend stub consumed.
"""

from __future__ import annotations

import ctypes
import sys

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from mlplane.core.signature import RequestDecoder
from mlplane.serving.triton_backend import _Input, pyfunc_predictor, quiet_dlpack_capsule_errors

# MLflow's advice when saving these small models (type hints, input examples) is not what they test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROWS = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=np.float32)
TENSOR_IN = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "INPUT0")])
TENSOR_OUT = Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "OUTPUT0")])


class AddOne(mlflow.pyfunc.PythonModel):
    """Records every input it is given."""

    def __init__(self) -> None:
        self.seen: list = []

    def predict(self, context, model_input, params=None):
        self.seen.append(model_input)
        return model_input["INPUT0"] + (params or {}).get("step", 1)


class AddOneNoContext(mlflow.pyfunc.PythonModel):
    def predict(self, model_input):
        return model_input + 1


def _save(tmp_path, python_model, inputs, outputs=None, params=None, name="model"):
    path = tmp_path / name
    mlflow.pyfunc.save_model(str(path), python_model=python_model, pip_requirements=["numpy"],
                             signature=ModelSignature(inputs=inputs, outputs=outputs, params=params))
    return mlflow.pyfunc.load_model(str(path))


def _decoded(model, **arrays):
    """What the Triton backend hands the predictor: the kserve runtime's decoder applied to the tensors."""
    decoder = RequestDecoder(model.metadata.get_input_schema())
    return decoder.decode([_Input(name, "FP32", array) for name, array in arrays.items()])


def test_tensor_model_sees_the_same_input_and_answers_the_same(tmp_path):
    model = _save(tmp_path, AddOne(), TENSOR_IN, TENSOR_OUT)
    predict = pyfunc_predictor(model)
    assert predict != model.predict  # the direct path: no second schema enforcement per request
    data = _decoded(model, INPUT0=ROWS)

    direct, enforced = predict(data), model.predict(data)

    np.testing.assert_array_equal(direct, ROWS + 1)
    np.testing.assert_array_equal(direct, enforced)
    assert direct.dtype == enforced.dtype == np.float32
    seen_direct, seen_enforced = model.unwrap_python_model().seen
    assert type(seen_direct) is type(seen_enforced) is dict
    assert seen_direct.keys() == seen_enforced.keys() == {"INPUT0"}
    assert seen_direct["INPUT0"].dtype == seen_enforced["INPUT0"].dtype == np.float32
    np.testing.assert_array_equal(seen_direct["INPUT0"], seen_enforced["INPUT0"])


def test_unnamed_tensor_and_predict_without_context(tmp_path):
    spec = Schema([TensorSpec(np.dtype(np.float32), (-1, 4))])
    model = _save(tmp_path, AddOneNoContext(), spec, spec)
    predict = pyfunc_predictor(model)
    data = _decoded(model, **{"input-0": ROWS})
    assert isinstance(data, np.ndarray)
    np.testing.assert_array_equal(predict(data), model.predict(data))
    np.testing.assert_array_equal(predict(data), ROWS + 1)


@pytest.mark.parametrize("signature, arrays", [
    (TENSOR_IN, {"INPUT0": ROWS}),
    (Schema([TensorSpec(np.dtype(np.float32), (-1, 4))]), {"input-0": ROWS}),
    (Schema([TensorSpec(np.dtype(np.float32), (-1, 4), "a"), TensorSpec(np.dtype(np.int64), (-1,), "b")]),
     {"b": np.array([1, 2]), "a": ROWS}),
], ids=["named", "unnamed", "two-tensors"])
def test_checked_tensors_pass_through_as_the_decoder_hands_them_on(signature, arrays):
    """The Triton backend skips the decoder for tensor signatures (Triton has checked the tensors against
    config.pbtxt): the model must see exactly what the decoder would give it."""
    decoder = RequestDecoder(signature)
    assert decoder.passes_tensors_through
    dtypes = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    decoded = decoder.decode([_Input(n, dtypes[a.dtype], a) for n, a in arrays.items()])
    passed = decoder.pass_through(dict(arrays))
    assert type(passed) is type(decoded)
    if isinstance(decoded, dict):
        assert list(passed) == list(decoded)
        for name in decoded:
            assert passed[name] is decoded[name]
    else:
        assert passed is decoded


def test_column_signatures_are_decoded():
    """Columns become a DataFrame (and strings are decoded): never passed through."""
    columns = Schema([ColSpec("double", "a"), ColSpec("string", "s")])
    assert not RequestDecoder(columns).passes_tensors_through


class SeesContext(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        from mlflow.pyfunc.context import get_prediction_context

        seen = get_prediction_context()
        return np.full((len(model_input["INPUT0"]), 4), 1.0 if seen and seen.model_id else 0.0, dtype=np.float32)


def test_the_direct_path_predicts_in_the_logged_models_context(tmp_path, monkeypatch):
    """A logged model's id is in MLflow's prediction context while it predicts (traces name it), as with
    ``model.predict``, and gone afterwards."""
    from mlflow.pyfunc.context import get_prediction_context

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="m", python_model=SeesContext(), pip_requirements=["numpy"],
                                           signature=ModelSignature(inputs=TENSOR_IN, outputs=TENSOR_OUT))
        model = mlflow.pyfunc.load_model(info.model_uri)
        assert model.model_id
        predict = pyfunc_predictor(model)
        assert predict != model.predict
        data = _decoded(model, INPUT0=ROWS)
        np.testing.assert_array_equal(predict(data), model.predict(data))
        np.testing.assert_array_equal(predict(data), np.ones((2, 4), dtype=np.float32))
        assert get_prediction_context() is None
    finally:
        mlflow.set_tracking_uri(None)


def test_params_schema_defaults_still_apply(tmp_path):
    params = ParamSchema([ParamSpec("step", "integer", 10)])
    model = _save(tmp_path, AddOne(), TENSOR_IN, TENSOR_OUT, params)
    predict = pyfunc_predictor(model)
    assert predict == model.predict  # MLflow fills in the params' defaults: keep its predict
    np.testing.assert_array_equal(predict(_decoded(model, INPUT0=ROWS)), ROWS + 10)


def test_column_signature_keeps_mlflow_enforcement(tmp_path):
    class Total(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input.sum(axis=1).to_numpy()

    columns = Schema([ColSpec("double", "a"), ColSpec("double", "b")])
    model = _save(tmp_path, Total(), columns)
    predict = pyfunc_predictor(model)
    assert predict == model.predict
    frame = RequestDecoder(columns).decode([_Input("a", "FP64", np.array([1.0, 2.0])),
                                            _Input("b", "FP64", np.array([3.0, 4.0]))])
    assert isinstance(frame, pd.DataFrame)
    assert predict(frame).tolist() == [4.0, 6.0]


_USED = b"used_dlpack"  # the name the backend stub gives a capsule it consumed; must outlive the capsule


def _consumed_capsule() -> None:
    """Do what the backend stub does with a numpy array it takes: consume its DLPack capsule."""
    capsule = np.arange(3.0).__dlpack__()
    set_name = ctypes.pythonapi.PyCapsule_SetName
    set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
    set_name(capsule, _USED)
    del capsule  # numpy's capsule destructor reports "PyCapsule_GetPointer called with incorrect name"


class _RaisesOnDelete:
    def __del__(self):
        raise RuntimeError("a real problem")


@pytest.fixture
def unraisable():
    seen: list = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"{type(u.exc_value).__name__}: {u.exc_value}")
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


def test_without_the_hook_every_capsule_is_reported(unraisable):
    _consumed_capsule()
    assert unraisable == ["ValueError: PyCapsule_GetPointer called with incorrect name"]


def test_quiet_hook_drops_only_the_capsule_error(unraisable):
    quiet_dlpack_capsule_errors()
    quiet_dlpack_capsule_errors()  # once per process: a second call does not stack hooks
    for _ in range(3):
        _consumed_capsule()
    assert unraisable == []
    obj = _RaisesOnDelete()
    del obj
    assert unraisable == ["RuntimeError: a real problem"]  # everything else still reaches the old hook
