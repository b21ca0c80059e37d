"""The Triton Python-backend model of ``runtime: triton``: an MLflow pyfunc behind Triton's batcher.

Triton imports the generated ``model.py`` of each version (see :mod:`mlplane.runtime.triton_repo`),
which imports :class:`TritonPythonModel` from here. Only the Triton backend stub runs this module;
``triton_python_backend_utils`` exists only there and is imported in :meth:`initialize`.

Tensors cross the stub through DLPack (its numpy path returns empty outputs under numpy 2). Inputs
are decoded with the same :class:`~mlplane.serving.signature.RequestDecoder` as the kserve runtime,
so a model sees the same DataFrame or ndarray under both runtimes. Requests the dynamic batcher
hands over together are concatenated row-wise, predicted once and split again; if the combined
batch fails, each request is retried alone so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlplane.serving.signature import RequestDecoder, ResponseEncoder, example_input


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
        import mlflow.pyfunc
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "model.json")) as f:
            meta = json.load(f)
        self.model = mlflow.pyfunc.load_model(model_location(version_dir, meta["model_uri"]))
        signature = self.model.metadata.signature
        self._decoder = RequestDecoder(signature.inputs if signature else None)
        self._encoder = ResponseEncoder(signature.outputs if signature else None)
        self._inputs = [(t["name"], _v2(t["data_type"])) for t in config["input"]]
        self._outputs = [t["name"] for t in config["output"]]
        warmup = example_input(signature.inputs if signature else None)
        if warmup is not None:
            self.model.predict(warmup)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        if len(requests) > 1:  # a dynamic batch: one predict for all rows
            try:
                return [self._respond(outputs) for outputs in self._predict([self._read(r) for r in requests])]
            except Exception:
                pass  # one bad request must not fail its neighbours: answer each one alone
        return [self._one(r) for r in requests]

    # ------------------------------------------------------------------ helpers
    def _one(self, request: Any) -> Any:
        try:
            (outputs,) = self._predict([self._read(request)])
            return self._respond(outputs)
        except Exception as exc:
            return self._pb.InferenceResponse(error=self._pb.TritonError(f"{type(exc).__name__}: {exc}"))

    def _read(self, request: Any) -> dict[str, np.ndarray]:
        arrays = {}
        for name, datatype in self._inputs:
            tensor = self._pb.get_input_tensor_by_name(request, name)
            if tensor is None:
                continue
            arrays[name] = tensor.as_numpy() if datatype == "BYTES" else np.from_dlpack(tensor)
        return arrays

    def _predict(self, batches: list[dict[str, np.ndarray]]) -> list[list[tuple[str, np.ndarray]]]:
        """Predict the rows of all requests at once; one list of (name, array) per request."""
        if len(batches) == 1:
            merged = batches[0]
            rows = [0]
        else:
            names = batches[0].keys()
            merged = {n: np.concatenate([b[n] for b in batches]) for n in names}
            counts = [len(next(iter(b.values()))) for b in batches]
            rows = list(np.cumsum(counts)[:-1])
        types = dict(self._inputs)
        pyfunc_input = self._decoder.decode([_Input(n, types[n], a) for n, a in merged.items()])
        encoded = {name: arr for name, _dt, arr in self._encoder.encode(self.model.predict(pyfunc_input))}
        missing = [n for n in self._outputs if n not in encoded]
        if missing:
            raise ValueError(f"the model returned {sorted(encoded)}, not the declared output(s) {missing}")
        if len(batches) == 1:
            return [[(n, encoded[n]) for n in self._outputs]]
        parts = {n: np.split(encoded[n], rows) for n in self._outputs}
        return [[(n, parts[n][i]) for n in self._outputs] for i in range(len(batches))]

    def _respond(self, outputs: list[tuple[str, np.ndarray]]) -> Any:
        pb = self._pb
        # The stub prints a harmless "PyCapsule_GetPointer called with incorrect name" traceback for
        # every numpy-2 DLPack capsule it takes (the tensor is fine): keep it out of the log.
        with contextlib.redirect_stderr(io.StringIO()):
            tensors = [pb.Tensor.from_dlpack(n, _exportable(a)) for n, a in outputs]
        return pb.InferenceResponse(tensors)


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
