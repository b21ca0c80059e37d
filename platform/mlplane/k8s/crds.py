"""CustomResourceDefinitions generated from the spec: `python -m mlplane.k8s.crds [--check]`.

Writes `charts/mlplane-crds/templates/<plural>.mlplane.io.yaml` from the pydantic models, so the
schema the API server enforces cannot drift from what `mlplane validate` accepts.

The pydantic JSON Schema is turned into a *structural* OpenAPI v3 schema (what apiextensions/v1
requires): `$ref`s are inlined, `anyOf: [X, {type: null}]` becomes `X` with `nullable: true`, quantities
become int-or-string, `title`/`$defs`/`const` are dropped and `additionalProperties: false` is left to
the API server's pruning (structural schemas forbid it next to `properties`).

Cross-field rules (`RULES` of each spec model, see `mlplane.spec.rules`) become `x-kubernetes-validations`
on the object they sit on, so the API server refuses what `mlplane validate` refuses, with the same message.
"""

from __future__ import annotations

import copy
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mlplane._generated import REPO_ROOT, generator_main
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.platform import Platform

GROUP = "mlplane.io"
VERSION = "v1alpha1"
COMMAND = "python -m mlplane.k8s.crds"
TEMPLATES_DIR = REPO_ROOT / "charts" / "mlplane-crds" / "templates"

# Keywords copied as they are (after their values are converted).
_KEPT = ("description", "enum", "minimum", "maximum", "pattern", "maxLength", "minLength", "maxItems",
         "minItems", "maxProperties", "format", "default")

# Fields whose pydantic default must NOT become an API-server default: the server would write it into
# every stored object and the platform-level default could never apply.
#   spec.runtime — `Platform.spec.serving.defaultRuntime` applies when a deployment names no runtime.
_NO_SERVER_DEFAULT: dict[str, frozenset[str]] = {
    "ModelDeployment": frozenset({"spec.runtime"}),
}


@dataclass(frozen=True)
class CrdKind:
    """One kind served by a CRD: its model, names and printer columns."""

    model: type[BaseModel]
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[dict[str, Any], ...] = field(default=())

    @property
    def kind(self) -> str:
        return str(self.model.model_fields["kind"].default)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"


KINDS: tuple[CrdKind, ...] = (
    CrdKind(
        model=ModelDeployment,
        plural="modeldeployments",
        short_names=("md", "mdep"),
        printer_columns=(
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
            {"name": "Version", "type": "string", "jsonPath": ".status.servedVersion"},
            {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpus"},
            {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
    CrdKind(
        model=Platform,
        plural="platforms",
        short_names=("mlp",),
        printer_columns=(
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Tracking", "type": "string", "jsonPath": ".spec.tracking.mode"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ),
    ),
)


# --------------------------------------------------------------------------- schema conversion
def _is_quantity(options: list[dict[str, Any]]) -> bool:
    """The spec's quantity type: a string with a pattern, or a non-negative number."""
    types = sorted(o.get("type", "") for o in options)
    return types == ["number", "string"]


def spec_models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `model`'s fields, by class name (pydantic's `$defs` names)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for info in annotation.model_fields.values():
                    visit(info.annotation)
            return
        if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated, list, dict):
            for arg in typing.get_args(annotation):
                visit(arg)

    visit(model)
    return found


def _validations(ref: str, models: Mapping[str, type[BaseModel]]) -> list[dict[str, str]]:
    model = models.get(ref.rsplit("/", 1)[-1])
    return [v for rule in getattr(model, "RULES", ()) if (v := rule.validation()) is not None]  # not Python-only


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], path: str, no_default: frozenset[str],
             models: Mapping[str, type[BaseModel]] | None = None) -> dict:
    """One JSON Schema node as a structural OpenAPI v3 node; `path` is the dotted field path.

    `models` (class name → model) supplies the cross-field rules of the objects inlined from `$ref`s.
    """
    models = models or {}
    node = dict(node)
    validations: list[dict[str, str]] = []
    if "$ref" in node:  # inline; keys next to the $ref (e.g. description) win over the target's
        ref = node.pop("$ref")
        validations = _validations(ref, models)
        node = {**defs[ref.rsplit("/", 1)[-1]], **node}
    nullable = False
    if "anyOf" in node:
        given = node.pop("anyOf")
        options = [dict(o) for o in given if o.get("type") != "null"]
        nullable = len(options) < len(given)
        if len(options) == 1:
            inner = options[0]
            if "$ref" in inner:
                validations = _validations(inner["$ref"], models)
                inner = dict(defs[inner["$ref"].rsplit("/", 1)[-1]])
            node = {**inner, **node}  # keys beside anyOf (description, default) win
        elif _is_quantity(options):
            pattern = next(o["pattern"] for o in options if o.get("type") == "string")
            quantity: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": pattern,
                                        "x-kubernetes-int-or-string": True}
            if "description" in node:
                quantity["description"] = node["description"]
            if nullable:
                quantity["nullable"] = True
            return quantity
        else:
            raise ValueError(f"{path or '<root>'}: cannot express anyOf {options} in a structural schema; "
                             "add a case to mlplane.k8s.crds._convert")
    out: dict[str, Any] = {}
    kind = node.get("type")
    if "const" in node:  # apiVersion/kind: the API server sets them; a string is all a schema may say
        kind = "string"
    if kind is None and "enum" in node:
        kind = "string"
    if kind is None:
        raise ValueError(f"{path or '<root>'}: no type in {node}; structural schemas need one")
    out["type"] = kind
    for key in _KEPT:
        if key not in node:
            continue
        if key == "default" and (node["default"] is None or path in no_default or "const" in node):
            continue
        out[key] = node[key]
    if "exclusiveMinimum" in node:  # 2020-12 number → OpenAPI v3 (draft 4) boolean
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if nullable:
        out["nullable"] = True
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {
                name: _convert(sub, defs, f"{path}.{name}" if path else name, no_default, models)
                for name, sub in props.items()
            }
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(node.get("additionalProperties"), Mapping):  # a map
            out["additionalProperties"] = _convert(node["additionalProperties"], defs, f"{path}.*", no_default,
                                                   models)
        else:  # a free-form object: the only place unknown fields are kept
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _convert(node.get("items", {}), defs, f"{path}[]", no_default, models)
    if validations:
        out["x-kubernetes-validations"] = validations
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The CRD's `openAPIV3Schema` for a resource model: a structural schema.

    `metadata` is only `type: object` (the API server owns its schema) and `status` stays in the
    schema for the status subresource.
    """
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    kind = str(model.model_fields["kind"].default)
    no_default = _NO_SERVER_DEFAULT.get(kind, frozenset())
    models = spec_models(model)
    props = {}
    for name, sub in schema["properties"].items():
        if name == "metadata":
            props[name] = {"type": "object"}
        else:
            props[name] = _convert(_strip_titles(sub), _strip_titles(defs), name, no_default, models)
            if name in ("apiVersion", "kind"):
                props[name] = {"type": "string", "description": props[name].get("description", "")}
    out: dict[str, Any] = {"type": "object", "description": schema.get("description", ""), "properties": props}
    required = [r for r in schema.get("required", []) if r not in ("apiVersion", "kind", "metadata")]
    if required:
        out["required"] = required
    return out


def _strip_titles(node: Any) -> Any:
    """A deep copy without `title` keys (pydantic's titles repeat the field names)."""
    if isinstance(node, Mapping):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return copy.copy(node)


# --------------------------------------------------------------------------- the CRD objects
def crd_for(kind: CrdKind) -> dict[str, Any]:
    """The `apiextensions.k8s.io/v1` CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.name,
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {"app.kubernetes.io/part-of": "mlplane", "app.kubernetes.io/managed-by": "Helm"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["mlplane"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema(kind.model)},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [dict(c) for c in kind.printer_columns],
            }],
        },
    }


def crds() -> list[dict[str, Any]]:
    """Every mlplane CRD, in a stable order."""
    return [crd_for(kind) for kind in KINDS]


def render_text(crd: Mapping[str, Any]) -> str:
    """The committed YAML of one CRD, with a header saying where it comes from."""
    body = yaml.safe_dump(dict(crd), sort_keys=False, allow_unicode=True, width=100)
    return (f"# Generated by `{COMMAND}` from the pydantic models in `mlplane.spec`; do not edit.\n"
            "# `helm.sh/resource-policy: keep` leaves the CRD (and every object of its kind) in place when\n"
            "# the chart is uninstalled.\n" + body)


def generate(templates_dir: Path = TEMPLATES_DIR) -> dict[Path, str]:
    """Every CRD file and its expected text."""
    return {templates_dir / kind.filename: render_text(crd_for(kind)) for kind in KINDS}


def main(argv: list[str] | None = None) -> int:
    return generator_main(COMMAND, __doc__.splitlines()[0], generate, argv)


if __name__ == "__main__":
    sys.exit(main())
