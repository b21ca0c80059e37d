"""A kserve ``Model`` that serves one version of an MLflow pyfunc model over the V2 protocol."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import mlflow.pyfunc
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InferenceError, InvalidInput, ModelNotFound

from mlplane.core.signature import RequestDecoder, ResponseEncoder, SignatureError, TensorMeta, example_input
from mlplane.features.online import EntityNotFound, FeatureJoin, FeatureLookupError, OnlineFeatures

__all__ = ["PLATFORM", "EntityNotFoundError", "ModelLoadError", "ModelSourceError", "PyfuncModel",
           "VersionNotFoundError", "check_version", "version_from_uri"]

PLATFORM = "mlflow_pyfunc"

log = logging.getLogger("mlplane.serving")


class ModelLoadError(InferenceError):
    """Loading or warming up a model version failed (HTTP 500; the served version is unchanged)."""


class ModelSourceError(InvalidInput):
    """The model URI points at nothing loadable (HTTP 400; the served version is unchanged)."""


class EntityNotFoundError(InvalidInput):
    """The request names entities without online features (HTTP 404, gRPC INVALID_ARGUMENT)."""


_SOURCE_ERROR_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


class VersionNotFoundError(ModelNotFound):
    """A request for a version the server does not serve (HTTP 404, gRPC NOT_FOUND)."""

    def __init__(self, name: str, version: str, served: str) -> None:
        super().__init__(name)
        self.reason = (f"model {name!r} has no version {version!r} here: this server serves version {served} "
                       f"(omit the version, or ask for /v2/models/{name}/versions/{served})")


def check_version(model: Any, name: str, version: str | None) -> None:
    """Raise :class:`VersionNotFoundError` unless ``version`` is empty or the one ``model`` serves."""
    served = getattr(model, "version", None)
    if version and served is not None and version != served:
        raise VersionNotFoundError(name, version, served)


def _empty_and_non_finite_inputs(inputs: Any) -> tuple[list[str], list[str]]:
    """The inputs without values and those with NaN/Infinity (asked only after the model failed)."""
    empty, non_finite = [], []
    for inp in inputs:
        try:
            arr = inp.as_numpy()
        except Exception:  # only asked after the model failed; its own error is what gets reported
            continue
        if not isinstance(arr, np.ndarray):
            continue
        if arr.size == 0:
            empty.append(inp.name)
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            non_finite.append(inp.name)
    return empty, non_finite


def version_from_uri(model_uri: str) -> str | None:
    """``models:/iris/3`` -> ``"3"``, ``models:/iris@champion`` -> ``"champion"``, else ``None``."""
    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/") :].strip("/")
    if "@" in rest:
        return rest.rsplit("@", 1)[1] or None
    parts = rest.split("/")
    return parts[1] if len(parts) == 2 and parts[1] else None


class PyfuncModel(Model):
    """One loaded MLflow pyfunc version. Immutable once loaded: a version swap builds a new object
    and replaces it in the repository, so in-flight requests finish on the object they started with.
    """

    def __init__(self, name: str, model_uri: str, version: str, features: OnlineFeatures | None = None) -> None:
        super().__init__(name)
        self.model_uri = model_uri
        self.version = version
        self.features = features  # online features joined to each request (spec.features)
        self._join: FeatureJoin | None = None
        self.platform = PLATFORM
        self._pyfunc: Any = None
        self._decoder: RequestDecoder | None = None
        self._encoder: ResponseEncoder | None = None
        self._input_types: list[dict[str, Any]] = []
        self._output_types: list[dict[str, Any]] = []

    # -- loading (runs off the event loop for swaps) -------------------------------------------
    def load(self) -> bool:
        started = time.monotonic()
        try:
            pyfunc = mlflow.pyfunc.load_model(self.model_uri)
        except Exception as exc:
            message = (
                f"could not load model {self.name!r} version {self.version} from {self.model_uri!r}: "
                f"{type(exc).__name__}: {exc}"
            )
            if isinstance(exc, OSError) or getattr(exc, "error_code", None) in _SOURCE_ERROR_CODES:
                raise ModelSourceError(message + " (check the model URI and MLFLOW_TRACKING_URI)") from exc
            raise ModelLoadError(message) from exc
        self._pyfunc = pyfunc
        metadata = pyfunc.metadata
        self._decoder = RequestDecoder(metadata.get_input_schema())
        self._encoder = ResponseEncoder(metadata.get_output_schema())
        if self.features is not None:
            try:
                self._join = FeatureJoin(self.features, self._decoder.inputs)
            except FeatureLookupError as exc:
                raise ModelLoadError(f"model {self.name!r} version {self.version}: {exc}") from exc
        self._input_types = [t.to_dict() for t in (self._join.inputs if self._join else self._decoder.inputs)]
        self._output_types = [t.to_dict() for t in self._encoder.outputs]
        self._warm_up(metadata)
        self.ready = True
        log.info(
            "loaded model %s version %s from %s in %.2fs",
            self.name,
            self.version,
            self.model_uri,
            time.monotonic() - started,
        )
        return True

    def _warm_up(self, metadata: Any) -> None:
        """One predict before taking traffic: the model's own input example must work; a synthetic
        row built from the signature only warns if it fails (it may not be a valid value)."""
        example = getattr(self._pyfunc, "input_example", None)
        if example is not None:
            try:
                outputs = self._encoder.encode(self._pyfunc.predict(example))  # type: ignore[union-attr]
            except Exception as exc:
                raise ModelLoadError(
                    f"warm-up predict on the input example of {self.model_uri!r} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        else:
            synthetic = example_input(metadata.get_input_schema())
            if synthetic is None:
                return
            try:
                outputs = self._encoder.encode(self._pyfunc.predict(synthetic))  # type: ignore[union-attr]
            except Exception as exc:
                log.warning("warm-up predict with a synthetic row failed (ignored): %s", exc)
                return
        if not self._output_types:
            self._output_types = [
                TensorMeta(name, datatype, (-1, *arr.shape[1:])).to_dict() for name, datatype, arr in outputs
            ]

    # -- metadata ------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        return self._input_types

    def get_output_types(self) -> list[dict[str, Any]]:
        return self._output_types

    def v2_metadata(self, name: str | None = None) -> dict[str, Any]:
        return {
            "name": name or self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": self._input_types,
            "outputs": self._output_types,
        }

    # -- hot path ------------------------------------------------------------------------------
    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the V2 inference protocol: POST /v2/models/{name}/infer")
        try:
            inputs = payload.inputs if self._join is None else self._join.join(payload.inputs)
            data = self._decoder.decode(inputs)  # type: ignore[union-attr]
        except SignatureError as exc:
            raise InvalidInput(str(exc)) from None
        except EntityNotFound as exc:
            raise EntityNotFoundError(str(exc)) from None
        try:
            prediction = self._pyfunc.predict(data)
        except Exception as exc:
            # A client's values the model refuses are the client's mistake (400 naming the input); any other
            # failure is a 500 that keeps the connection (a bare exception would make uvicorn drop it).
            empty, refused = _empty_and_non_finite_inputs(inputs)
            if refused:
                raise InvalidInput(
                    f"input(s) {', '.join(map(repr, refused))} hold NaN or infinite values, which model "
                    f"{self.name!r} refuses: {type(exc).__name__}: {exc}"
                ) from None
            if empty:
                raise InvalidInput(
                    f"input(s) {', '.join(map(repr, empty))} hold no values, and model {self.name!r} refuses an "
                    f"empty batch (send at least one row): {type(exc).__name__}: {exc}"
                ) from None
            log.warning("predict of model %s version %s failed: %s: %s", self.name, self.version,
                        type(exc).__name__, exc)
            raise InferenceError(f"model {self.name!r} version {self.version} failed: {type(exc).__name__}: {exc}") \
                from None
        try:
            encoded = self._encoder.encode(prediction)  # type: ignore[union-attr]
        except SignatureError as exc:
            raise InferenceError(str(exc)) from None
        requested = payload.request_outputs
        if requested:
            by_name = {name: (name, datatype, arr) for name, datatype, arr in encoded}
            unknown = [o.name for o in requested if o.name not in by_name]
            if unknown:
                raise InvalidInput(
                    f"unknown requested output(s) {', '.join(map(repr, unknown))}; model {self.name!r} has "
                    f"{', '.join(repr(n) for n in by_name)}"
                )
            encoded = [by_name[o.name] for o in requested]
        outputs = []
        for name, datatype, arr in encoded:
            out = InferOutput(name=name, shape=list(arr.shape), datatype=datatype)
            out.set_data_from_numpy(arr)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )
