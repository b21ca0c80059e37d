"""Generate the spec reference: `python -m mlplane.spec.reference [--check]` writes docs/spec-reference.md.

Everything in the document comes from the pydantic models (field names, types, bounds, enums, defaults
and descriptions) and from the iris example files, so it cannot drift from what the loader accepts.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

# The private names are the patterns and rules behind the constrained string types; naming them here
# turns an unreadable regex in the JSON Schema into "DNS-1123 label" or "quantity".
from mlplane._generated import REPO_ROOT, generator_main
from mlplane.spec.common import _DNS1123_LABEL, _DNS_RULE, _QUANTITY, API_VERSION, QUANTITY_RULE
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.platform import Platform

DOC_PATH = REPO_ROOT / "docs" / "spec-reference.md"
COMMAND = "python -m mlplane.spec.reference"

# Each kind and the example shown for it (copied verbatim from the repository).
KINDS: tuple[tuple[type[BaseModel], str], ...] = (
    (Platform, "examples/iris/platform.yaml"),
    (ModelDeployment, "examples/iris/deployment.yaml"),
)


# --------------------------------------------------------------------------- markdown helpers
def md_text(text: str) -> str:
    """Text safe inside a markdown table cell: `|` escaped, `<`, `>` and `*` escaped outside code spans."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("<", "\\<").replace(">", "\\>").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


def md_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """A GitHub-flavoured markdown table (cells must already be escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring (not one inherited from BaseModel)."""
    return inspect.cleandoc(model.__dict__.get("__doc__") or "")


# --------------------------------------------------------------------------- values
def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def flow(value: Any) -> str:
    """A value in YAML flow style, quoting strings only where YAML would read them as something else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        try:
            plain = yaml.safe_load(value) == value and "," not in value and not value.startswith(("{", "["))
        except yaml.YAMLError:
            plain = False
        return value if plain and value else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return flow(str(value))


def default_cell(info: FieldInfo) -> str:
    """Default column: **required**, unset, or the default value in YAML flow style."""
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    return md_text(f"`{flow(_jsonable(value))}`")


# --------------------------------------------------------------------------- types
def _bounds(schema: dict[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    parts = []
    if lo is not None:
        parts.append(f"≥ {lo}")
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']}")
    if hi is not None:
        parts.append(f"≤ {hi}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']}")
    return " " + ", ".join(parts) if parts else ""


def type_text(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A readable type from a JSON Schema property: `integer ≥ 1`, `list of Toleration`, `map of string`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = defs[name]
        return name if target.get("type", "object") == "object" else type_text(target, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if any(o.get("pattern") == _QUANTITY for o in options):
            return "quantity"
        return " or ".join(type_text(o, defs) for o in options)
    if "const" in schema:
        return f"`{flow(schema['const'])}`"
    if "enum" in schema:
        return "one of: " + ", ".join(f"`{flow(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_text(schema.get("items", {}), defs)
    if kind == "object":
        values = schema.get("additionalProperties")
        return "map of " + type_text(values, defs) if isinstance(values, dict) else "object"
    if kind in ("integer", "number"):
        return kind + _bounds(schema)
    if kind == "string":
        if schema.get("pattern") == _DNS1123_LABEL:
            return "DNS-1123 label"
        extra = []
        if "pattern" in schema:
            extra.append(f"matching `{schema['pattern']}`")
        if "maxLength" in schema:
            extra.append(f"at most {schema['maxLength']} characters")
        return "string" + (" " + ", ".join(extra) if extra else "")
    if kind == "boolean":
        return "boolean"
    return kind or "any"


# --------------------------------------------------------------------------- walking the models
def nested_model(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model inside `X`, `X | None`, `list[X]` or `dict[str, X]`, and the path suffix for its items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            found = nested_model(arg)
            if found:
                return found
    if origin is list and args:
        found = nested_model(args[0])
        return (found[0], "[]" + found[1]) if found else None
    if origin is dict and len(args) == 2:
        found = nested_model(args[1])
        return (found[0], ".<key>" + found[1]) if found else None
    return None


Section = tuple[str, type[BaseModel], FieldInfo | None]


def sections(model: type[BaseModel], path: str = "", info: FieldInfo | None = None) -> Iterator[Section]:
    """(dotted path, model, field holding it) for a model and every object nested in it, depth first.

    The top-level `status` is skipped: runtimes write it.
    """
    yield path, model, info
    for name, child_info in model.model_fields.items():
        alias = child_info.alias or name
        if not path and alias == "status":
            continue
        found = nested_model(child_info.annotation)
        if found:
            child, suffix = found
            child_path = f"{path}.{alias}{suffix}" if path else f"{alias}{suffix}"
            yield from sections(child, child_path, child_info)


def _own_default_note(path: str, info: FieldInfo | None) -> list[str]:
    """A line when leaving the whole object out gives values other than its fields' own defaults."""
    if info is None or info.is_required():
        return []
    value = _jsonable(info.get_default(call_default_factory=True, validated_data={}))
    if not isinstance(value, dict) or not value:
        return []
    leaf = path.rsplit(".", 1)[-1]
    return [f"When `{leaf}` is left out it is `{flow(value)}`; the defaults below apply to the fields "
            f"left out of a `{leaf}` you write.", ""]


def field_rows(model: type[BaseModel], path: str) -> list[tuple[str, ...]]:
    """One row per field: dotted path, type, default, description."""
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    rows: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        alias = info.alias or name
        prop = schema["properties"][alias]
        dotted = f"{path}.{alias}" if path else alias
        rows.append((f"`{dotted}`", md_text(type_text(prop, defs)), default_cell(info),
                     md_text(info.description or "")))
    return rows


# --------------------------------------------------------------------------- the document
def _kind_section(model: type[BaseModel], example: str, root: Path) -> list[str]:
    kind = model.model_fields["kind"].default
    lines = [f"## {kind}", "", _doc(model), "", f"`apiVersion: {API_VERSION}`, `kind: {kind}`.", "",
             "### Example", "", f"From [`{example}`](../{example}):", "", "```yaml",
             (root / example).read_text(encoding="utf-8").rstrip("\n"), "```", "", "### Fields", ""]
    for path, section, info in sections(model):
        if path:
            lines += [f"#### `{path}`", "", f"{section.__name__}: {_doc(section)}", ""]
            lines += _own_default_note(path, info)
        else:
            lines += ["#### Top-level fields", ""]
        lines += md_table(("Field", "Type", "Default", "Description"), field_rows(section, path))
        lines.append("")
        if not path:
            lines += ["`status` is written by runtimes to report observed state (conditions, endpoints, "
                      "served version); leave it out of the files you write.", ""]
    return lines


def render(root: Path = REPO_ROOT) -> str:
    """The whole of docs/spec-reference.md; `root` is where the example files are read from."""
    lines = [
        "# Spec reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the pydantic models in `mlplane.spec`. "
        "Do not edit by hand: run `make docs`. -->",
        "",
        "mlplane reads Kubernetes-shaped YAML documents: every document has `apiVersion`, `kind`, "
        "`metadata` and `spec`, fields are camelCase, and unknown fields are rejected with the path of the "
        "mistake. A file may hold several documents separated by `---`. Validate one with "
        "`mlplane validate -f FILE`. The same models generate the JSON Schemas in "
        "[`platform/mlplane/spec/schemas/`](../platform/mlplane/spec/schemas/) for editor completion.",
        "",
        "Kinds: " + ", ".join(f"[{m.model_fields['kind'].default}](#{m.model_fields['kind'].default.lower()})"
                              for m, _ in KINDS) + ".",
        "",
        "Types used below:",
        "",
        f"- **DNS-1123 label**: {md_text(_DNS_RULE)}.",
        f"- **quantity**: {md_text(QUANTITY_RULE)}.",
        "",
        "In the Default column, **required** fields must be given; **unset** fields may be left out and "
        "then have no value (the description says what that means); `{}` means the object is created "
        "with each of its fields at its own default.",
        "",
    ]
    for model, example in KINDS:
        lines += _kind_section(model, example, root)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    return generator_main(COMMAND, __doc__.splitlines()[0], lambda: {DOC_PATH: render()}, argv)


if __name__ == "__main__":
    sys.exit(main())
