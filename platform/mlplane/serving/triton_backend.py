"""The Triton Python-backend model of ``runtime: triton``: an MLflow pyfunc behind Triton's batcher.

Triton imports the generated ``model.py`` of each version (see :mod:`mlplane.triton.repository`),
which imports :class:`TritonPythonModel` from here. Only the Triton backend stub runs this module;
``triton_python_backend_utils`` exists only there and is imported in :meth:`initialize`.

Tensors cross the stub through DLPack (its numpy path returns empty outputs under numpy 2). Inputs
are decoded with the same :class:`~mlplane.core.signature.RequestDecoder` as the kserve runtime,
so a model sees the same DataFrame or ndarray under both runtimes. Requests the dynamic batcher
hands over together are concatenated row-wise, predicted once and split again; if the combined
batch fails, each request is retried alone so one bad request cannot fail its neighbours.

Per request the model does only what the request needs: everything that depends on the model alone
(input types, output names, which predict to call) is worked out in :meth:`initialize`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any

import mlflow.pyfunc
import mlflow.pyfunc.context
import numpy as np
from mlflow.pyfunc.context import Context, set_prediction_context

from mlplane.core.signature import RequestDecoder, ResponseEncoder, SignatureError, example_input, v2_to_numpy


class _Input:
    """A decoded request tensor in the shape :class:`RequestDecoder` reads (``V2Input``)."""

    __slots__ = ("name", "datatype", "shape", "_array")

    def __init__(self, name: str, datatype: str, array: np.ndarray) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = list(array.shape)
        self._array = array

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # exists only inside Triton's Python backend stub

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "model.json")) as f:
            meta = json.load(f)
        self.model = mlflow.pyfunc.load_model(model_location(version_dir, meta["model_uri"]))
        signature = self.model.metadata.signature
        self._decoder = RequestDecoder(signature.inputs if signature else None)
        # Triton has checked names, datatypes and shapes against config.pbtxt (the signature's): a tensor
        # signature's arrays go to the model as they are, as the decoder would hand them on.
        self._pass_through = self._decoder.passes_tensors_through
        self._encoder = ResponseEncoder(signature.outputs if signature else None)
        self._types = {t["name"]: _v2(t["data_type"]) for t in config["input"]}
        self._strings = frozenset(n for n, t in self._types.items() if t == "BYTES")  # no DLPack for those
        self._outputs = [t["name"] for t in config["output"]]
        self._output_names = frozenset(self._outputs)
        # One declared output whose dtype the model returns as an ndarray needs no encoding (the common case).
        declared = self._encoder.outputs
        single = declared[0] if len(declared) == 1 and self._outputs == [declared[0].name] else None
        self._single_output = single.name if single is not None else None
        self._single_dtype = v2_to_numpy(single.datatype) if single is not None else None
        self._max_request_bytes = int(os.environ.get("MLPLANE_MAX_REQUEST_BYTES") or 0)  # 0: no limit
        self._predict_fn = pyfunc_predictor(self.model)
        quiet_dlpack_capsule_errors()
        warmup = example_input(signature.inputs if signature else None)
        if warmup is not None:
            self._predict_fn(warmup)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        if len(requests) > 1:  # a dynamic batch: one predict for all rows
            try:
                return [self._respond(outputs) for outputs in self._predict([self._read(r) for r in requests])]
            except Exception:
                pass  # one bad request must not fail its neighbours: answer each one alone
        return [self._one(r) for r in requests]

    # ------------------------------------------------------------------ helpers
    def _one(self, request: Any) -> Any:
        """One request: read, predict, answer (kept short: at low load its cost is the request's latency)."""
        arrays: dict[str, np.ndarray] = {}
        try:
            arrays = self._read(request)
            return self._respond(self._encode(self._predict_fn(self._decode(arrays))))
        except (RequestTooLarge, SignatureError) as exc:  # the client's mistake: 400 / INVALID_ARGUMENT
            return self._pb.InferenceResponse(error=self._pb.TritonError(str(exc), self._pb.TritonError.INVALID_ARG))
        except Exception as exc:
            refused = [n for n, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
            if refused:  # NaN/Infinity the model refuses: the client's values, 400 naming the inputs (as kserve)
                return self._pb.InferenceResponse(error=self._pb.TritonError(
                    f"input(s) {', '.join(map(repr, refused))} hold NaN or infinite values, which the model refuses: "
                    f"{type(exc).__name__}: {exc}", self._pb.TritonError.INVALID_ARG))
            return self._pb.InferenceResponse(error=self._pb.TritonError(f"{type(exc).__name__}: {exc}"))

    def _read(self, request: Any) -> dict[str, np.ndarray]:
        """The request's tensors by name (Triton already checked them against config.pbtxt's names and types)."""
        if self._strings:
            strings = self._strings
            arrays = {t.name(): t.as_numpy() if t.name() in strings else np.from_dlpack(t) for t in request.inputs()}
        else:
            arrays = {t.name(): np.from_dlpack(t) for t in request.inputs()}
        if self._max_request_bytes:
            check_request_bytes(arrays.values(), self._max_request_bytes)
        return arrays

    def _decode(self, arrays: dict[str, np.ndarray]) -> Any:
        """The model's input, as the kserve runtime's decoder makes it."""
        if self._pass_through:
            return self._decoder.pass_through(arrays)
        types = self._types
        return self._decoder.decode([_Input(n, types[n], a) for n, a in arrays.items()])

    def _predict(self, batches: list[dict[str, np.ndarray]]) -> list[list[tuple[str, np.ndarray]]]:
        """Predict the rows of all requests at once; one list of (name, array) per request."""
        if len(batches) == 1:
            merged = batches[0]
        else:
            first = batches[0]
            if any(b.keys() != first.keys() for b in batches[1:]):  # not the same inputs: no common batch
                raise ValueError("the requests of this batch do not carry the same inputs")
            merged = {n: np.concatenate([b[n] for b in batches]) for n in first}
        outputs = self._encode(self._predict_fn(self._decode(merged)))
        if len(batches) == 1:
            return [outputs]
        ends = np.cumsum([len(next(iter(b.values()))) for b in batches]).tolist()
        if any(len(a) != ends[-1] for _n, a in outputs):  # rows cannot be told apart: answer each alone
            raise ValueError(f"the model returned {[len(a) for _n, a in outputs]} rows for {ends[-1]} input rows")
        return [[(n, a[start:end]) for n, a in outputs] for start, end in zip([0, *ends[:-1]], ends, strict=True)]

    def _encode(self, prediction: Any) -> list[tuple[str, np.ndarray]]:
        """The declared outputs of ``prediction``, in config order, as the kserve runtime's encoder makes them."""
        if type(prediction) is np.ndarray and prediction.dtype == self._single_dtype:  # what encode() would return
            return [(self._single_output, prediction)]  # type: ignore[list-item]
        encoded = {name: arr for name, _dt, arr in self._encoder.encode(prediction)}
        if not self._output_names <= encoded.keys():
            missing = [n for n in self._outputs if n not in encoded]
            raise ValueError(f"the model returned {sorted(encoded)}, not the declared output(s) {missing}")
        return [(n, encoded[n]) for n in self._outputs]

    def _respond(self, outputs: list[tuple[str, np.ndarray]]) -> Any:
        pb = self._pb
        return pb.InferenceResponse([pb.Tensor.from_dlpack(n, a if a.flags.c_contiguous and a.flags.writeable
                                                           else _exportable(a)) for n, a in outputs])


def pyfunc_predictor(model: Any) -> Callable[[Any], Any]:
    """What to call per request for ``model`` (an MLflow ``PyFuncModel``) with a decoded input.

    ``model.predict`` enforces the input schema on every call (and inspects the predict function's
    signature each time). For a tensor signature of numbers or booleans without a params schema, that
    enforcement (names, dtypes, shapes) is what :class:`RequestDecoder` has already checked, and it
    hands the input on unchanged: then the model's own predict function is called with the same input
    and the same params (``None``), inside the same MLflow prediction context (the model id, for
    traces), with what ``model.predict`` looks up per call resolved once here. Every other signature
    (columns, strings, params, type hints, dependency schemas) goes through ``model.predict``, whose
    enforcement may convert the input.
    """
    predict_fn = getattr(model, "_predict_fn", None)  # PyFuncModel's predict function (MLflow 2 and 3)
    metadata = model.metadata
    schema = metadata.get_input_schema()
    from_type_hints = getattr(metadata, "_is_signature_from_type_hint", None)
    if (predict_fn is None or schema is None or not schema.inputs or not schema.is_tensor_spec()
            or not (schema.has_input_names() or len(schema.inputs) == 1)
            or metadata.get_params_schema() is not None or from_type_hints is None or from_type_hints()
            or (metadata.metadata or {}).get("dependencies_schemas")
            or any(np.dtype(spec.type).kind not in "biuf" for spec in schema.inputs)):
        return model.predict
    fn = _python_model_predict(getattr(model, "_model_impl", None), predict_fn)
    if fn is None:
        params = inspect.signature(predict_fn).parameters.get("params")
        if params is not None and params.kind != inspect.Parameter.VAR_KEYWORD:
            fn = functools.partial(predict_fn, params=None)
        else:
            fn = predict_fn
    model_id = getattr(model, "model_id", None)
    if not model_id:  # an empty prediction context changes nothing
        return fn
    context = getattr(mlflow.pyfunc.context, "_PREDICTION_REQUEST_CTX", None)  # what set_prediction_context sets
    if isinstance(context, ContextVar):
        def predict(data: Any) -> Any:  # set_prediction_context without its generator (per request)
            token = context.set(Context(model_id=model_id))
            try:
                return fn(data)
            finally:
                context.reset(token)
        return predict

    def predict_in_context(data: Any) -> Any:  # another MLflow: its own context manager
        with set_prediction_context(Context(model_id=model_id)):
            return fn(data)

    return predict_in_context


def _python_model_predict(impl: Any, predict_fn: Callable[..., Any]) -> Callable[[Any], Any] | None:
    """A ``PythonModel``'s own predict, called the way MLflow's wrapper calls it with ``params=None``.

    The wrapper (``_PythonModelPyfuncWrapper.predict``) inspects the model's predict signature on
    every call to decide whether to pass ``context`` and ``params``; here that is decided once. Its
    input conversion only touches DataFrames, which the tensor inputs of this path never are.
    ``None`` when ``impl`` is not that wrapper (other flavours keep their own predict function).
    """
    python_model = getattr(impl, "python_model", None)
    if type(impl).__name__ != "_PythonModelPyfuncWrapper" or python_model is None or predict_fn != impl.predict:
        return None
    try:
        from mlflow.models.signature import _is_context_in_predict_function_signature  # private: not in every MLflow
    except ImportError:  # another MLflow: keep its wrapper
        return None
    parameters = inspect.signature(python_model.predict).parameters
    kwargs = {"params": None} if "params" in parameters else {}
    if _is_context_in_predict_function_signature(parameters=parameters):
        return functools.partial(python_model.predict, impl.context, **kwargs)
    return functools.partial(python_model.predict, **kwargs)


_CAPSULE_ERROR = "PyCapsule_GetPointer called with incorrect name"


def quiet_dlpack_capsule_errors() -> None:
    """Drop the harmless error numpy 2 reports for every DLPack capsule the backend stub takes.

    The stub marks a capsule it consumed with a name numpy does not know, so numpy's capsule destructor
    reports "PyCapsule_GetPointer called with incorrect name" as an unraisable error (the tensor is
    fine). The default hook prints a traceback per response into the server log; this hook drops
    exactly that error and hands every other one to the hook it replaces. Installed once per stub
    process (one model per stub).
    """
    previous = sys.unraisablehook
    if getattr(previous, "_mlplane_quiet_capsules", False):
        return

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if not (unraisable.object is None and type(exc) is ValueError and str(exc) == _CAPSULE_ERROR):
            previous(unraisable)

    hook._mlplane_quiet_capsules = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class RequestTooLarge(ValueError):
    """A request's tensors are larger than ``serving.maxRequestBytes``."""


def check_request_bytes(arrays: Iterable[np.ndarray], limit: int) -> None:
    """Refuse a request whose tensors add up to more than ``limit`` bytes (0: no limit), before the model sees it.

    Triton 2.51 has no request-size option: this is where ``serving.maxRequestBytes`` holds on gRPC
    (see docs/triton-limits.md).
    """
    if limit <= 0:
        return
    total = sum(a.nbytes for a in arrays)
    if total > limit:
        raise RequestTooLarge(f"the request's tensors are {total} bytes, over serving.maxRequestBytes "
                              f"({limit} bytes); send fewer rows per request")


def model_location(version_dir: str, model_uri: str) -> str:
    """What model.json's ``model_uri`` names: a URI (the local runtime: ``models:/…``, ``s3://…``, an
    absolute path) as is, or a path relative to the version directory (the cluster's self-contained
    repository, whose ``model/`` directory came down with it)."""
    if ":" in model_uri.split("/", 1)[0] or os.path.isabs(model_uri):
        return model_uri
    return os.path.join(version_dir, model_uri)


def _exportable(array: np.ndarray) -> np.ndarray:
    """DLPack refuses read-only arrays (a pyfunc may return a view of its read-only input): copy those."""
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()


def _v2(triton_type: str) -> str:
    name = triton_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name
