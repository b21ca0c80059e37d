"""MLflow model signature <-> Open Inference Protocol (KServe V2) tensors.

Pure code: no kserve import (kserve parses ``sys.argv`` at import time), no I/O. Everything that
depends only on the model (names, dtypes, column order) is computed once in the constructors of
:class:`RequestDecoder` and :class:`ResponseEncoder`, so the per-request path is a few dict
look-ups and numpy calls.

Requests are read through a duck type (``name``, ``datatype``, ``shape``, ``as_numpy()``) that
kserve's ``InferInput`` satisfies; problems raise :class:`SignatureError` with a message that names
the input, what was sent and what is expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import pandas as pd

__all__ = [
    "ResponseEncoder",
    "RequestDecoder",
    "SignatureError",
    "TensorMeta",
    "V2Input",
    "example_input",
    "inputs_from_schema",
    "split_binary_request",
    "numpy_to_v2",
    "outputs_from_schema",
    "v2_to_numpy",
]

# MLflow ColSpec type name -> V2 datatype. Types not listed (datetime, Array, Object, Map, Any)
# travel as BYTES and are handed to the model as Python objects.
COLUMN_TYPE_TO_V2: dict[str, str] = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
    "binary": "BYTES",
}

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NUMPY_KIND_TO_V2: dict[str, str] = {"O": "BYTES", "U": "BYTES", "S": "BYTES", "M": "BYTES", "m": "BYTES"}


class SignatureError(ValueError):
    """A request does not match the model's signature (maps to HTTP 400 / gRPC INVALID_ARGUMENT)."""


class V2Input(Protocol):
    """What the decoder reads from a request input (kserve's ``InferInput`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> list[int]: ...

    def as_numpy(self) -> np.ndarray: ...


@dataclass(frozen=True)
class TensorMeta:
    """One V2 tensor description (``$metadata_tensor``); ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def v2_to_numpy(datatype: str) -> np.dtype:
    try:
        return _V2_TO_NUMPY[datatype]
    except KeyError:
        raise SignatureError(
            f"unknown V2 datatype {datatype!r}; expected one of {sorted(_V2_TO_NUMPY)}"
        ) from None


def numpy_to_v2(dtype: np.dtype) -> str:
    """V2 datatype of a numpy dtype; strings, objects and datetimes travel as BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in _NUMPY_KIND_TO_V2:
        return _NUMPY_KIND_TO_V2[dtype.kind]
    for name, candidate in _V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    raise SignatureError(f"numpy dtype {dtype} has no V2 datatype")


def split_binary_request(body: bytes, json_length: int) -> tuple[dict[str, Any], list[Any]]:
    """Split a request that uses the V2 binary tensor extension, without per-element Python work.

    ``body`` is the JSON header (``json_length`` bytes) followed by the inputs' raw bytes in input
    order. Returns the parsed header and, per input, the tensor: an ``ndarray`` that views ``body``
    (``np.frombuffer``, read-only, reshaped to the declared shape) for fixed-size datatypes, the raw
    ``bytes`` for ``BYTES`` (length-prefixed elements, decoded by the caller), or ``None`` when the
    input carries JSON ``data`` instead.
    """
    if not 0 <= json_length <= len(body):
        raise SignatureError(
            f"inference-header-content-length is {json_length}, but the body has {len(body)} bytes"
        )
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise SignatureError(f"the JSON header of the request is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise SignatureError('malformed request: the JSON header must be an object with an "inputs" list')
    view = memoryview(body)
    start = json_length
    tensors: list[Any] = []
    for i, inp in enumerate(header["inputs"]):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str):
            raise SignatureError(f"malformed request: inputs[{i}] must be an object with a name")
        name, datatype, shape = inp["name"], inp.get("datatype"), inp.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise SignatureError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        params = inp.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is None:
            if "data" not in inp:
                raise SignatureError(f"input {name!r} has neither data nor parameters.binary_data_size")
            tensors.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SignatureError(f"input {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
        end = start + size
        if end > len(body):
            raise SignatureError(
                f"input {name!r} declares {size} bytes of binary data, but only {len(body) - start} remain"
            )
        dtype = v2_to_numpy(datatype) if isinstance(datatype, str) else v2_to_numpy(repr(datatype))
        if datatype == "BYTES":
            tensors.append(bytes(view[start:end]))
        else:
            count = int(np.prod(shape, dtype=np.int64))
            if count * dtype.itemsize != size:
                raise SignatureError(
                    f"input {name!r} has {size} bytes of binary data, but shape {_fmt_shape(shape)} "
                    f"of {datatype} needs {count * dtype.itemsize}"
                )
            tensors.append(np.frombuffer(view[start:end], dtype=dtype).reshape(shape))
        start = end
    if start != len(body):
        raise SignatureError(f"the request has {len(body) - start} bytes of binary data that no input claims")
    return header, tensors


def _column_v2_type(col_type: Any) -> str:
    return COLUMN_TYPE_TO_V2.get(getattr(col_type, "name", None) or str(col_type), "BYTES")


def _is_tensor_schema(schema: Any) -> bool:
    return bool(schema is not None and schema.inputs and schema.is_tensor_spec())


def inputs_from_schema(schema: Any) -> list[TensorMeta]:
    """V2 input metadata for an MLflow input schema (``None`` -> no declared inputs).

    A column-based schema gives one 1-D input per column (shape ``[-1]``); a tensor-based schema one
    input per tensor with its own shape. Unnamed entries are called ``input-<i>``.
    """
    return _tensors_from_schema(schema, "input")


def outputs_from_schema(schema: Any) -> list[TensorMeta]:
    """V2 output metadata for an MLflow output schema; unnamed entries are called ``output-<i>``."""
    return _tensors_from_schema(schema, "output")


def _tensors_from_schema(schema: Any, prefix: str) -> list[TensorMeta]:
    if schema is None or not schema.inputs:
        return []
    if schema.is_tensor_spec():
        return [
            TensorMeta(
                spec.name or f"{prefix}-{i}",
                numpy_to_v2(spec.type),
                tuple(int(d) for d in spec.shape),
            )
            for i, spec in enumerate(schema.inputs)
        ]
    return [
        TensorMeta(spec.name or f"{prefix}-{i}", _column_v2_type(spec.type), (-1,))
        for i, spec in enumerate(schema.inputs)
    ]


def _fmt_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def _decode_strings(arr: np.ndarray) -> np.ndarray:
    """gRPC and binary REST carry BYTES as ``bytes``; string columns want ``str``."""
    if arr.size and isinstance(arr.flat[0], bytes):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in arr.ravel()], dtype=object)
    return arr


class RequestDecoder:
    """Turns V2 request inputs into the pyfunc input the model's signature asks for.

    * column-based signature -> ``pandas.DataFrame`` in signature column order;
    * one unnamed tensor -> ``numpy.ndarray``; named tensors -> ``dict[str, ndarray]``;
    * no signature -> one input gives its ndarray, several give a dict.
    """

    def __init__(self, input_schema: Any) -> None:
        self.inputs: list[TensorMeta] = inputs_from_schema(input_schema)
        self._by_name: dict[str, TensorMeta] = {t.name: t for t in self.inputs}
        self._expected = ", ".join(repr(t.name) for t in self.inputs)
        self._columns = bool(self.inputs) and not _is_tensor_schema(input_schema)
        self._single_unnamed = (
            _is_tensor_schema(input_schema) and len(self.inputs) == 1 and not input_schema.has_input_names()
        )
        optional: set[str] = set()
        string_columns: set[str] = set()
        if self._columns:
            for meta, spec in zip(self.inputs, input_schema.inputs, strict=True):
                if not getattr(spec, "required", True):
                    optional.add(meta.name)
                if getattr(spec.type, "name", None) == "string":
                    string_columns.add(meta.name)
        self._required = [t.name for t in self.inputs if t.name not in optional]
        self._string_columns = frozenset(string_columns)
        self._column_order = [t.name for t in self.inputs]
        self._index = pd.Index(self._column_order)
        self._one_block = (
            self._columns
            and len({t.datatype for t in self.inputs}) == 1
            and self.inputs[0].datatype != "BYTES"
        )

    @property
    def passes_tensors_through(self) -> bool:
        """Whether :meth:`decode` hands tensors that match the signature on unchanged (a tensor signature).

        Then a caller that has already checked the names, datatypes and shapes of a request against the
        signature (Triton, against the ``config.pbtxt`` generated from it) may call :meth:`pass_through`
        instead: the model sees the same input.
        """
        return bool(self.inputs) and not self._columns

    def pass_through(self, arrays: dict[str, np.ndarray]) -> Any:
        """What :meth:`decode` returns for checked tensors of a tensor signature (:attr:`passes_tensors_through`)."""
        return arrays[self.inputs[0].name] if self._single_unnamed else arrays

    def decode(self, inputs: Sequence[V2Input]) -> Any:
        if not inputs:
            raise SignatureError(f"the request has no inputs; expected {self._expected or 'at least one'}")
        if not self.inputs:
            return self._decode_unsigned(inputs)
        by_name = self._by_name
        arrays: dict[str, np.ndarray] = {}
        for inp in inputs:
            meta = by_name.get(inp.name)
            if meta is None:
                raise SignatureError(f"unknown input {inp.name!r}; the model expects {self._expected}")
            if inp.name in arrays:
                raise SignatureError(f"input {inp.name!r} is sent more than once")
            if inp.datatype != meta.datatype:
                raise SignatureError(
                    f"input {inp.name!r} has datatype {inp.datatype}, expected {meta.datatype}"
                )
            arrays[inp.name] = self._array(inp, meta)
        if len(arrays) < len(self._required):
            missing = [n for n in self._required if n not in arrays]
            if missing:
                raise SignatureError(
                    f"missing input(s) {', '.join(map(repr, missing))}; the model expects {self._expected}"
                )
        if self._columns:
            return self._frame(arrays)
        if self._single_unnamed:
            return arrays[self.inputs[0].name]
        return arrays

    def _array(self, inp: V2Input, meta: TensorMeta) -> np.ndarray:
        shape = inp.shape
        if self._columns:
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise SignatureError(
                    f"input {inp.name!r} has shape {_fmt_shape(shape)}, expected [n] (one value per row)"
                )
        elif len(shape) != len(meta.shape) or any(
            want != -1 and got != want for got, want in zip(shape, meta.shape, strict=True)
        ):
            raise SignatureError(
                f"input {inp.name!r} has shape {_fmt_shape(shape)}, expected {_fmt_shape(meta.shape)}"
            )
        try:
            arr = inp.as_numpy()
        except SignatureError:
            raise
        except (ValueError, TypeError) as exc:
            raise SignatureError(
                f"input {inp.name!r} has shape {_fmt_shape(shape)} but its data does not fit it "
                f"as {inp.datatype} ({exc})"
            ) from None
        if self._columns:
            arr = arr.reshape(-1)
            if inp.name in self._string_columns:
                arr = _decode_strings(arr)
        return arr

    def _frame(self, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
        lengths = {name: len(a) for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{n!r}: {k}" for n, k in lengths.items())
            raise SignatureError(f"all columns must have the same length; got {detail}")
        order = self._column_order
        if len(arrays) == len(order):
            if self._one_block:  # one numeric dtype: a single 2-D block is the cheapest frame to build
                return pd.DataFrame(
                    np.column_stack([arrays[c] for c in order]), columns=self._index, copy=False
                )
            return pd.DataFrame({c: arrays[c] for c in order})
        return pd.DataFrame({c: arrays[c] for c in order if c in arrays})

    @staticmethod
    def _decode_unsigned(inputs: Sequence[V2Input]) -> Any:
        try:
            if len(inputs) == 1:
                return inputs[0].as_numpy()
            return {inp.name: inp.as_numpy() for inp in inputs}
        except SignatureError:
            raise
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"input data does not fit its shape and datatype: {exc}") from None


class ResponseEncoder:
    """Turns a pyfunc prediction into ``(name, datatype, ndarray)`` V2 outputs.

    Names and datatypes come from the output signature when there is one (the prediction is cast
    to the declared dtype if it differs), otherwise from the prediction itself (``output-<i>``,
    DataFrame column names, dict keys).
    """

    def __init__(self, output_schema: Any) -> None:
        self.outputs: list[TensorMeta] = outputs_from_schema(output_schema)
        self._by_name = {t.name: t for t in self.outputs}
        self._single_name = self.outputs[0].name if len(self.outputs) == 1 else "output-0"
        self._numpy = {t.name: _V2_TO_NUMPY[t.datatype] for t in self.outputs}

    def encode(self, prediction: Any) -> list[tuple[str, str, np.ndarray]]:
        if isinstance(prediction, np.ndarray):
            return [self._one(self._single_name, prediction)]
        if isinstance(prediction, pd.DataFrame):
            if len(prediction.columns) == 1 and len(self.outputs) == 1:
                return [self._one(self._single_name, prediction.iloc[:, 0].to_numpy())]
            return [self._one(str(col), prediction[col].to_numpy()) for col in prediction.columns]
        if isinstance(prediction, pd.Series):
            return [self._one(self._single_name, prediction.to_numpy())]
        if isinstance(prediction, Mapping):
            return [self._one(str(k), np.asarray(v)) for k, v in prediction.items()]
        return [self._one(self._single_name, np.asarray(prediction))]

    def _one(self, name: str, arr: np.ndarray) -> tuple[str, str, np.ndarray]:
        want = self._numpy.get(name)
        if want is not None:
            if arr.dtype != want:
                try:
                    arr = arr.astype(want)
                except (ValueError, TypeError) as exc:
                    raise SignatureError(
                        f"output {name!r} has dtype {arr.dtype}, which does not convert to the declared "
                        f"{self._by_name[name].datatype}: {exc}"
                    ) from None
            return name, self._by_name[name].datatype, arr
        if arr.dtype.kind in "USMm":
            arr = arr.astype(object)
        return name, numpy_to_v2(arr.dtype), arr


def example_input(input_schema: Any, rows: int = 1) -> Any:
    """A synthetic pyfunc input matching the signature (for a warm-up predict), or ``None``."""
    if input_schema is None or not input_schema.inputs:
        return None
    if _is_tensor_schema(input_schema):
        tensors = {}
        for meta in inputs_from_schema(input_schema):
            shape = tuple(rows if d == -1 else d for d in meta.shape)
            tensors[meta.name] = np.zeros(shape, dtype=_V2_TO_NUMPY[meta.datatype])
            if meta.datatype == "BYTES":
                tensors[meta.name].fill("")
        if not input_schema.has_input_names():
            return next(iter(tensors.values()))
        return tensors
    values = {"FP64": 0.0, "FP32": 0.0, "INT64": 0, "INT32": 0, "BOOL": False}
    columns: dict[str, Any] = {}
    for meta, spec in zip(inputs_from_schema(input_schema), input_schema.inputs, strict=True):
        type_name = getattr(spec.type, "name", None)
        if meta.datatype != "BYTES":
            columns[meta.name] = np.full(rows, values[meta.datatype], dtype=_V2_TO_NUMPY[meta.datatype])
        elif type_name == "string":
            columns[meta.name] = [""] * rows
        elif type_name == "binary":
            columns[meta.name] = [b""] * rows
        else:
            return None  # datetime / nested types: no meaningful synthetic value
    return pd.DataFrame(columns)
