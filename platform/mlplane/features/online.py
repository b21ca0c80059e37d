"""Online features joined to inference requests (``spec.features``), read with the Feast SDK.

The model server reads the online store itself (``FeatureStore.get_online_features`` on the
platform's ``feature_store.yaml``) rather than calling the Feast feature server over HTTP: the
fetch stays in-process, with no extra network hop and JSON round trip in the request path (see
``bench/features.py``). The feature server (``feast serve``) is for other clients.

A request carries the entity ids as the V2 input named ``entityKey``; :class:`FeatureJoin` swaps it
for one column per feature, named after the feature, with the datatype the model's signature
declares, so the usual signature decoding does the rest. No kserve import here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlplane.core.signature import SignatureError, TensorMeta, V2Input, v2_to_numpy
from mlplane.spec.deployment import FeaturesSpec

__all__ = ["EntityNotFound", "FeatureJoin", "FeatureLookupError", "OnlineFeatures", "parse_features"]

# Feast primitive type name -> V2 datatype, for entity join keys.
_ENTITY_V2 = {"INT64": "INT64", "INT32": "INT32", "STRING": "BYTES", "BYTES": "BYTES"}


class FeatureLookupError(ValueError):
    """``spec.features`` does not match the feature store or the model (deploy-time; names the problem)."""


class EntityNotFound(LookupError):
    """Entities without online values, with ``onMissing: error`` (HTTP 404)."""


def parse_features(text: str) -> FeaturesSpec:
    """``spec.features`` from its JSON form (the model server's ``--features``)."""
    return FeaturesSpec.model_validate(json.loads(text))


def _feast_type(dtype: Any) -> str:
    return getattr(dtype, "name", None) or str(dtype)


# Feast Value kinds that are plain Python scalars; others go through Feast's own conversion.
_SCALARS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "bool_val", "string_val", "bytes_val"})


def _python(value: Any) -> Any:
    """A Feast ``Value`` proto as a Python value (``None`` when the store has none)."""
    kind = value.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind is None or kind == "null_val":
        return None
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


class _Column:
    """A V2 input built from fetched features (satisfies :class:`~mlplane.core.signature.V2Input`)."""

    __slots__ = ("array", "datatype", "name", "shape")

    def __init__(self, name: str, datatype: str, shape: list[int], array: np.ndarray) -> None:
        self.name, self.datatype, self.shape, self.array = name, datatype, shape, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class OnlineFeatures:
    """Reads ``spec.features`` for entity ids from the online store of ``feature_store_yaml``."""

    def __init__(self, spec: FeaturesSpec, feature_store_yaml: str | Path) -> None:
        from feast import FeatureStore

        self.spec = spec
        self.refs = list(spec.features)
        self.names = [ref.split(":", 1)[1] for ref in self.refs]
        self._defaults = [spec.defaults.get(ref) for ref in self.refs]
        self._store = FeatureStore(fs_yaml_file=Path(feature_store_yaml))
        self.entity_datatype = self.check()

    def check(self) -> str:
        """Every feature view and feature exists and is keyed by ``entityKey``; returns the key's V2 datatype."""
        from feast.errors import FeastObjectNotFoundException

        problems: list[str] = []
        datatype = "INT64"
        views: dict[str, Any] = {}
        for ref in self.refs:
            view_name, feature = ref.split(":", 1)
            if view_name not in views:
                try:
                    views[view_name] = self._store.get_feature_view(view_name)
                except FeastObjectNotFoundException:
                    known = sorted(v.name for v in self._store.list_feature_views())
                    problems.append(f"feature view '{view_name}' does not exist (known: {known or 'none'}; "
                                    "apply it first)")
                    views[view_name] = None
            view = views[view_name]
            if view is None:
                continue
            have = [f.name for f in view.features]
            if feature not in have:
                problems.append(f"'{ref}': feature view '{view_name}' has no feature '{feature}' (it has {have})")
            keys = {c.name: c.dtype for c in view.entity_columns}
            if self.spec.entity_key not in keys:
                problems.append(f"'{ref}': feature view '{view_name}' is keyed by {sorted(keys)}, "
                                f"not entityKey '{self.spec.entity_key}'")
            else:
                datatype = _ENTITY_V2.get(_feast_type(keys[self.spec.entity_key]), "BYTES")
        if problems:
            raise FeatureLookupError("spec.features: " + "; ".join(problems))
        return datatype

    def fetch(self, ids: Sequence[Any]) -> list[list[Any]]:
        """Per feature (in ``spec.features`` order), the values for ``ids``; missing ones handled per ``onMissing``."""
        proto = self._store.get_online_features(
            features=self.refs, entity_rows={self.spec.entity_key: list(ids)}
        ).proto
        position = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
        columns = [[_python(v) for v in proto.results[position[name]].values] for name in self.names]
        if not any(None in col for col in columns):
            return columns
        missing = sorted({i for col in columns for i, v in enumerate(col) if v is None})
        if self.spec.on_missing == "error":
            shown = [ids[i] for i in missing[:10]]
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise EntityNotFound(
                f"{self.spec.entity_key} {shown}{more}: no online values for {self.refs} in the feature store "
                "(unknown entity, or not materialized); set features.onMissing: default to use defaults")
        return [[default if v is None else v for v in col] for col, default in zip(columns, self._defaults,
                                                                                    strict=True)]


class FeatureJoin:
    """Replaces the entity-id input of a request with the fetched feature columns."""

    def __init__(self, online: OnlineFeatures, model_inputs: Sequence[TensorMeta]) -> None:
        self.online = online
        self.key = online.spec.entity_key
        by_name = {t.name: t for t in model_inputs}
        if model_inputs:
            unknown = [n for n in online.names if n not in by_name]
            if unknown:
                raise FeatureLookupError(
                    f"spec.features: {unknown} are not inputs of the model (its inputs: {list(by_name)})")
        self._columns = [(n, by_name[n].datatype if n in by_name else "FP64") for n in online.names]
        self._fetched = frozenset(online.names)
        self._key_in_model = self.key in by_name
        self.inputs = [TensorMeta(self.key, online.entity_datatype, (-1,))] + [
            t for t in model_inputs if t.name not in self._fetched and t.name != self.key]

    def join(self, inputs: Sequence[V2Input]) -> list[V2Input]:
        """``inputs`` with the entity ids swapped for the feature columns (raises ``EntityNotFound``)."""
        key_input = None
        rest: list[V2Input] = []
        for inp in inputs:
            if inp.name == self.key:
                key_input = inp
            elif inp.name in self._fetched:
                raise SignatureError(f"input {inp.name!r} comes from the feature store; send only "
                                     f"{self.key!r} (the entity ids)")
            else:
                rest.append(inp)
        if key_input is None:
            raise SignatureError(f"missing input {self.key!r}: the entity ids to fetch features for")
        ids = self._ids(key_input)
        values = self.online.fetch(ids)
        n = len(ids)
        for (name, datatype), col, ref in zip(self._columns, values, self.online.refs, strict=True):
            if datatype[:2] != "FP" and None in col:  # NaN stands in for a missing value in float columns only
                shown = [ids[i] for i, v in enumerate(col) if v is None][:10]
                raise EntityNotFound(f"{self.key} {shown}: no online value for '{ref}' and no value for it in "
                                     "features.defaults")
            rest.append(_Column(name, datatype, [n], np.asarray(col, dtype=v2_to_numpy(datatype))))
        if self._key_in_model:
            rest.append(key_input)
        return rest

    def _ids(self, inp: V2Input) -> list[Any]:
        if inp.datatype not in ("INT64", "INT32", "BYTES"):
            raise SignatureError(f"input {self.key!r} has datatype {inp.datatype}; entity ids are "
                                 f"{self.online.entity_datatype}")
        if len(inp.shape) != 1 and not (len(inp.shape) == 2 and inp.shape[1] == 1):
            raise SignatureError(f"input {self.key!r} has shape {inp.shape}, expected [n] (one id per row)")
        try:
            arr = inp.as_numpy().reshape(-1)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"input {self.key!r}: data does not fit shape {inp.shape} ({exc})") from None
        if self.online.entity_datatype == "BYTES":
            return [v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()]
        if inp.datatype == "BYTES":
            raise SignatureError(f"input {self.key!r} has datatype BYTES; entity ids are "
                                 f"{self.online.entity_datatype}")
        return arr.tolist()  # Python ints
