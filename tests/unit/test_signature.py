"""MLflow signature <-> V2 tensor mapping and request decoding (pure, no server)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from mlplane.core.signature import (
    RequestDecoder,
    ResponseEncoder,
    SignatureError,
    TensorMeta,
    example_input,
    inputs_from_schema,
    numpy_to_v2,
    outputs_from_schema,
)
from mlplane.serving.settings import parse_args

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
_NP = {
    "FP64": np.float64,
    "FP32": np.float32,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": bool,
    "BYTES": object,
}


@dataclass
class FakeInput:
    """The shape of kserve's InferInput that the decoder reads."""

    name: str
    datatype: str
    shape: list[int]
    data: list

    def as_numpy(self) -> np.ndarray:
        return np.array(self.data, dtype=_NP[self.datatype]).reshape(self.shape)


def iris_schema() -> Schema:
    return Schema([ColSpec(DataType.double, c) for c in IRIS])


def iris_inputs(n: int = 2) -> list[FakeInput]:
    return [FakeInput(c, "FP64", [n], [float(i) for i in range(n)]) for c in IRIS]


# -- metadata ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("col_type", "v2"),
    [
        (DataType.double, "FP64"),
        (DataType.float, "FP32"),
        (DataType.long, "INT64"),
        (DataType.integer, "INT32"),
        (DataType.boolean, "BOOL"),
        (DataType.string, "BYTES"),
        (DataType.binary, "BYTES"),
    ],
)
def test_column_types_map_to_v2(col_type: DataType, v2: str) -> None:
    assert inputs_from_schema(Schema([ColSpec(col_type, "x")])) == [TensorMeta("x", v2, (-1,))]


def test_column_schema_gives_one_input_per_column_in_order() -> None:
    metas = inputs_from_schema(iris_schema())
    assert [m.to_dict() for m in metas] == [{"name": c, "datatype": "FP64", "shape": [-1]} for c in IRIS]


def test_tensor_schema_keeps_shape_and_dtype_and_names_unnamed_tensors() -> None:
    unnamed = Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28))])
    assert inputs_from_schema(unnamed) == [TensorMeta("input-0", "FP32", (-1, 28, 28))]
    assert outputs_from_schema(Schema([TensorSpec(np.dtype(np.int64), (-1,))])) == [
        TensorMeta("output-0", "INT64", (-1,))
    ]
    named = Schema(
        [TensorSpec(np.dtype(np.int32), (-1, 4), "ids"), TensorSpec(np.dtype(bool), (-1,), "mask")]
    )
    assert inputs_from_schema(named) == [
        TensorMeta("ids", "INT32", (-1, 4)),
        TensorMeta("mask", "BOOL", (-1,)),
    ]


def test_no_schema_means_no_declared_tensors() -> None:
    assert inputs_from_schema(None) == [] and outputs_from_schema(None) == []


@pytest.mark.parametrize(
    ("dtype", "v2"),
    [
        (np.float64, "FP64"),
        (np.float32, "FP32"),
        (np.int64, "INT64"),
        (np.uint8, "UINT8"),
        (bool, "BOOL"),
        (object, "BYTES"),
        ("<U5", "BYTES"),
        ("datetime64[ns]", "BYTES"),
    ],
)
def test_numpy_to_v2(dtype, v2: str) -> None:
    assert numpy_to_v2(np.dtype(dtype)) == v2


# -- request decoding -----------------------------------------------------------------------------
def test_columns_decode_to_frame_in_signature_order() -> None:
    decoder = RequestDecoder(iris_schema())
    frame = decoder.decode(list(reversed(iris_inputs(3))))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == IRIS and len(frame) == 3
    assert frame.dtypes.tolist() == [np.float64] * 4


def test_columns_accept_n_by_1() -> None:
    inputs = [FakeInput(c, "FP64", [2, 1], [1.0, 2.0]) for c in IRIS]
    assert RequestDecoder(iris_schema()).decode(inputs).shape == (2, 4)


def test_string_columns_decode_bytes() -> None:
    decoder = RequestDecoder(Schema([ColSpec(DataType.string, "text")]))
    frame = decoder.decode([FakeInput("text", "BYTES", [2], [b"hi", b"there"])])
    assert frame["text"].tolist() == ["hi", "there"]


@pytest.mark.parametrize("sent", ["BYTES", "INT32", "FP32"])
def test_wrong_datatype_names_input_sent_and_expected(sent: str) -> None:
    inputs = iris_inputs()
    inputs[1] = FakeInput("sepal_width", sent, [2], ["a", "b"] if sent == "BYTES" else [1, 2])
    with pytest.raises(SignatureError, match=rf"input 'sepal_width' has datatype {sent}, expected FP64"):
        RequestDecoder(iris_schema()).decode(inputs)


def test_wrong_column_shape() -> None:
    inputs = iris_inputs()
    inputs[2] = FakeInput("petal_length", "FP64", [1, 2], [1.0, 2.0])
    with pytest.raises(SignatureError, match=r"input 'petal_length' has shape \[1, 2\], expected \[n\]"):
        RequestDecoder(iris_schema()).decode(inputs)


def test_columns_must_have_same_length() -> None:
    inputs = iris_inputs(3)
    inputs[3] = FakeInput("petal_width", "FP64", [2], [1.0, 2.0])
    with pytest.raises(SignatureError, match=r"same length.*'petal_width': 2"):
        RequestDecoder(iris_schema()).decode(inputs)


def test_data_that_does_not_fit_the_shape() -> None:
    inputs = iris_inputs(2)
    inputs[0] = FakeInput("sepal_length", "FP64", [3], [1.0, 2.0])
    with pytest.raises(SignatureError, match=r"input 'sepal_length' has shape \[3\]"):
        RequestDecoder(iris_schema()).decode(inputs)


def test_missing_and_unknown_inputs_are_named() -> None:
    decoder = RequestDecoder(iris_schema())
    with pytest.raises(SignatureError, match=r"missing input\(s\) 'petal_width'"):
        decoder.decode(iris_inputs()[:3])
    with pytest.raises(SignatureError, match=r"unknown input 'colour'; the model expects 'sepal_length'"):
        decoder.decode([*iris_inputs(), FakeInput("colour", "FP64", [2], [1.0, 2.0])])
    with pytest.raises(SignatureError, match="sent more than once"):
        decoder.decode([*iris_inputs(), iris_inputs()[0]])
    with pytest.raises(SignatureError, match="no inputs"):
        decoder.decode([])


def test_optional_columns_may_be_left_out() -> None:
    schema = Schema([ColSpec(DataType.double, "a"), ColSpec(DataType.double, "b", required=False)])
    frame = RequestDecoder(schema).decode([FakeInput("a", "FP64", [1], [1.0])])
    assert list(frame.columns) == ["a"]


def test_tensor_inputs() -> None:
    single = RequestDecoder(Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]))
    arr = single.decode([FakeInput("input-0", "FP32", [2, 2], [1, 2, 3, 4])])
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2) and arr.dtype == np.float32
    with pytest.raises(SignatureError, match=r"input 'input-0' has shape \[2, 3\], expected \[-1, 2\]"):
        single.decode([FakeInput("input-0", "FP32", [2, 3], list(range(6)))])
    named = RequestDecoder(
        Schema([TensorSpec(np.dtype(np.int64), (-1,), "a"), TensorSpec(np.dtype(np.int64), (-1,), "b")])
    )
    both = named.decode([FakeInput("a", "INT64", [1], [1]), FakeInput("b", "INT64", [1], [2])])
    assert set(both) == {"a", "b"}


def test_no_signature_passes_arrays_through() -> None:
    decoder = RequestDecoder(None)
    assert decoder.decode([FakeInput("x", "FP64", [2], [1.0, 2.0])]).tolist() == [1.0, 2.0]
    assert set(decoder.decode([FakeInput("x", "FP64", [1], [1.0]), FakeInput("y", "FP64", [1], [2.0])])) == {
        "x",
        "y",
    }


# -- response encoding ----------------------------------------------------------------------------
def test_encode_ndarray_series_frame_and_dict() -> None:
    enc = ResponseEncoder(Schema([TensorSpec(np.dtype(np.int64), (-1,))]))
    [(name, dt, arr)] = enc.encode(np.array([0, 2], dtype=np.int32))
    assert (name, dt, arr.dtype) == ("output-0", "INT64", np.int64)  # cast to the declared dtype
    [(name, dt, _)] = enc.encode(pd.Series([1, 2]))
    assert (name, dt) == ("output-0", "INT64")
    free = ResponseEncoder(None)
    frame = free.encode(pd.DataFrame({"label": ["a", "b"], "score": [0.1, 0.9]}))
    assert [(n, d) for n, d, _ in frame] == [("label", "BYTES"), ("score", "FP64")]
    assert [(n, d) for n, d, _ in free.encode({"p": [0.5]})] == [("p", "FP64")]
    [(name, dt, arr)] = free.encode(["x", "y"])
    assert (name, dt, arr.dtype) == ("output-0", "BYTES", object)


def test_example_input_follows_signature() -> None:
    frame = example_input(iris_schema())
    assert list(frame.columns) == IRIS and len(frame) == 1
    tensor = example_input(Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]))
    assert tensor.shape == (1, 3) and tensor.dtype == np.float32
    assert example_input(None) is None


def test_cli_arguments() -> None:
    s = parse_args(
        ["--name", "iris", "--model-uri", "models:/iris/1", "--http-port", "8123", "--grpc-port", "8124"]
    )
    assert (s.name, s.model_uri, s.model_version, s.host, s.max_request_bytes, s.grace_period) == (
        "iris",
        "models:/iris/1",
        None,
        "127.0.0.1",
        16 * 1024 * 1024,
        30,
    )
    with pytest.raises(SystemExit):
        parse_args(["--name", "iris"])


# -- binary tensor extension --------------------------------------------------------------------
def _binary_body(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    import orjson

    head = orjson.dumps(header)
    return head + b"".join(chunks), len(head)


def test_split_binary_request_views_the_body_without_copying():
    from mlplane.core.signature import split_binary_request

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, n = _binary_body(
        {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": x.nbytes}},
            {"name": "y", "datatype": "INT64", "shape": [1], "data": [7]},
        ]},
        x.tobytes(),
    )
    header, tensors = split_binary_request(body, n)
    assert [i["name"] for i in header["inputs"]] == ["x", "y"]
    assert tensors[0].dtype == np.float32 and tensors[0].shape == (2, 3)
    np.testing.assert_array_equal(tensors[0], x)
    assert not tensors[0].flags.owndata and not tensors[0].flags.writeable  # a view of the body
    assert tensors[1] is None


@pytest.mark.parametrize(
    ("inputs", "payload", "message"),
    [
        ([{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}], b"\0" * 4,
         "needs 8"),
        ([{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 8}}], b"\0" * 4,
         "only 4 remain"),
        ([{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"\0" * 8,
         "no input claims"),
        ([{"name": "x", "datatype": "FP99", "shape": [1], "parameters": {"binary_data_size": 4}}], b"\0" * 4,
         "unknown V2 datatype"),
        ([{"name": "x", "datatype": "FP32", "shape": [-1], "parameters": {"binary_data_size": 4}}], b"\0" * 4,
         "non-negative"),
        ([{"name": "x", "datatype": "FP32", "shape": [1]}], b"", "neither data"),
    ],
)
def test_split_binary_request_rejects_inconsistent_bodies(inputs, payload, message):
    from mlplane.core.signature import split_binary_request

    body, n = _binary_body({"inputs": inputs}, payload)
    with pytest.raises(SignatureError, match=message):
        split_binary_request(body, n)


def test_split_binary_request_rejects_a_bad_header():
    from mlplane.core.signature import split_binary_request

    with pytest.raises(SignatureError, match="not valid JSON"):
        split_binary_request(b'{"inputs": [', 12)
    with pytest.raises(SignatureError, match="inference-header-content-length"):
        split_binary_request(b"{}", 10)
