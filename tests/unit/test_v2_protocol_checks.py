"""mlplane.serving.protocol: the request checks the kserve runtime runs before it allocates a tensor."""

from __future__ import annotations

import numpy as np
import pytest

from mlplane.core.signature import SignatureError
from mlplane.serving.protocol import (
    MAX_JSON_DEPTH,
    RequestTooLarge,
    check_tensor,
    json_tensor,
    parse_json,
    parse_request,
)


@pytest.mark.parametrize(("datatype", "shape", "expected"), [
    ("FP64", [2, 3], (6, 48)), ("BYTES", [4], (4, 4)), ("BOOL", [0], (0, 0)), ("INT8", [], (1, 1)),
])
def test_check_tensor_counts_elements_and_bytes(datatype, shape, expected):
    assert check_tensor("x", datatype, shape, 1024) == expected


@pytest.mark.parametrize(("datatype", "words"), [
    ("fp64", ["'fp64'", "case-sensitive", "'FP64'"]), ("FLOAT", ["unknown datatype 'FLOAT'"]),
    (7, ["unknown datatype 7"]), (None, ["unknown datatype None"]),
])
def test_datatypes_are_spelled_as_the_protocol_does(datatype, words):
    with pytest.raises(SignatureError) as err:
        check_tensor("x", datatype, [1], 1024)
    assert all(w in str(err.value) for w in words) and "'x'" in str(err.value)


@pytest.mark.parametrize("shape", [[-1], [True], [1.0], ["1"], None, 3, [[1]]])
def test_shapes_are_lists_of_non_negative_integers(shape):
    with pytest.raises(SignatureError, match="non-negative integers"):
        check_tensor("x", "FP64", shape, 1024)


@pytest.mark.parametrize("dim", [2**31, 2**63 - 1, 2**64, 10**30])
def test_byte_size_over_the_limit_is_too_large_without_allocating(dim):
    with pytest.raises(RequestTooLarge, match="1024 bytes"):
        check_tensor("x", "FP64", [dim, dim], 1024)


def test_byte_size_counts_the_other_inputs():
    assert check_tensor("a", "FP64", [64], 1024, used=512) == (64, 512)
    with pytest.raises(RequestTooLarge, match="other inputs"):
        check_tensor("b", "FP64", [65], 1024, used=512)


@pytest.mark.parametrize(("datatype", "data", "words"), [
    ("INT32", [2**31], ["INT32's range"]), ("INT8", [-129], ["INT8's range"]), ("UINT8", [-1], ["UINT8's range"]),
    ("UINT64", [2**64], ["out-of-range"]), ("INT64", [1.5], ["not integers"]), ("FP32", [3.5e38], ["FP32's range"]),
    ("FP16", [70000.0], ["FP16's range"]), ("FP64", [None], ["null"]), ("FP64", ["1.5"], ["strings"]),
    ("FP64", [True], ["booleans"]), ("BOOL", [1], ["integers"]), ("FP64", [[1.0], 2.0], ["regular array"]),
    ("FP64", [1.0, 2.0], ["shape [1]", "2 values"]),
])
def test_json_data_must_fit_the_datatype(datatype, data, words):
    with pytest.raises(SignatureError) as err:
        json_tensor("col", datatype, [1], 1, data)
    message = str(err.value)
    assert "'col'" in message and all(w in message for w in words), message


def test_json_data_becomes_the_declared_dtype_and_shape():
    arr = json_tensor("x", "FP32", [2, 2], 4, [[1, 2], [3, 4.5]])
    assert arr.dtype == np.float32 and arr.shape == (2, 2) and arr[1, 1] == 4.5
    assert json_tensor("b", "BOOL", [2], 2, [True, False]).dtype == np.bool_
    assert json_tensor("e", "INT64", [0], 0, []).shape == (0,)


@pytest.mark.parametrize(("body", "words"), [
    (b'{"inputs": [{"name": "petal_width", "data": [NaN]}]}', ["'petal_width'", "NaN, Infinity"]),
    (b'{"inputs": [{"name": "a", "data": [1e400]}]}', ["'a'", "infinity"]),
    (b'{"inputs": [', ["not valid JSON"]),
])
def test_strict_json_names_the_input(body, words):
    with pytest.raises(SignatureError) as err:
        parse_json(body)
    assert not isinstance(err.value, RequestTooLarge)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_deep_nesting_is_too_large():
    with pytest.raises(RequestTooLarge, match=f"{MAX_JSON_DEPTH} levels"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(("doc", "words"), [
    ([], ["JSON object"]), ({}, ['"inputs" is required']), ({"inputs": []}, ['"inputs" is required']),
    ({"inputs": [1]}, ["inputs[0]"]), ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1]}]}, ["no data"]),
    ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": 1}]}, ["JSON array"]),
    ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}], "id": 3}, ["id must be a string"]),
    ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}], "outputs": [{}]}, ["outputs"]),
    ({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}], "parameters": []}, ["parameters"]),
])
def test_malformed_requests(doc, words):
    with pytest.raises(SignatureError) as err:
        parse_request(doc, 1024)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_good_request():
    req = parse_request({"id": "r1", "inputs": [{"name": "a", "datatype": "FP64", "shape": [2], "data": [1, 2]}],
                         "outputs": [{"name": "out"}]}, 1024)
    assert req.id == "r1" and req.outputs == [("out", None)]
    (inp,) = req.inputs
    assert (inp.name, inp.datatype, inp.shape, inp.count, inp.data) == ("a", "FP64", [2], 2, [1, 2])
