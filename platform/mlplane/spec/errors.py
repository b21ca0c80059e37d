"""`SpecError` and `Problem`: every spec mistake, located and explained in one line each."""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails


@dataclass(frozen=True)
class Problem:
    """One mistake in a spec: where it is, what was given, what is wrong and what is allowed."""

    source: str
    message: str
    document: int | None = None
    kind: str | None = None
    name: str | None = None
    path: str = ""
    value: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.document is not None:
            where += f": document {self.document}"
            if self.kind:
                where += f' ({self.kind} "{self.name}")' if self.name else f" ({self.kind})"
        what = f"got {self.value}; {self.message}" if self.value is not None else self.message
        return f"{where}: {self.path}: {what}" if self.path else f"{where}: {what}"


class SpecError(Exception):
    """The spec is invalid; `.problems` lists every mistake found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def short_repr(value: Any, limit: int = 60) -> str:
    """repr() cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_path(loc: tuple[str | int, ...]) -> str:
    """('spec', 'tolerations', 0, 'effect') -> 'spec.tolerations[0].effect'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_\-]*$", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _walk(
    root: type[BaseModel], loc: tuple[str | int, ...]
) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Follow an error location through the model classes: (model holding the last key, its field)."""
    model: type[BaseModel] | None = root
    info: FieldInfo | None = None
    keys = [part for part in loc if isinstance(part, str)]
    for i, part in enumerate(keys):
        if model is None:
            return None, None
        info = _field(model, part)
        if info is None:
            return model, None
        if i == len(keys) - 1:
            return model, info
        model = _model_in(info.annotation)
    return model, info


def _allowed_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _bounds(info: FieldInfo | None) -> str:
    if info is None:
        return ""
    parts = []
    for m in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return " and ".join(parts)


def _message(err: ErrorDetails, root: type[BaseModel]) -> tuple[str, bool]:
    """(message, show_value) for one pydantic error."""
    etype, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    if etype == "extra_forbidden":
        holder, _ = _walk(root, loc[:-1] + ("__none__",))
        allowed = _allowed_fields(holder) if holder else []
        msg = "unknown field"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        if allowed:
            msg += "; allowed fields here: " + ", ".join(repr(a) for a in allowed)
        return msg, False
    if etype == "missing":
        _, info = _walk(root, loc)
        if info is not None and typing.get_origin(info.annotation) is typing.Literal:
            return "required field is missing; allowed: " + ", ".join(
                repr(v) for v in typing.get_args(info.annotation)), False
        return "required field is missing", False
    if etype == "invalid_key":
        return "keys must be strings", True
    if etype == "literal_error":
        expected = re.sub(r" or ('[^']*')$", r", \1", str(ctx.get("expected", "")))
        return f"allowed: {expected}", True
    if etype in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        _, info = _walk(root, loc)
        rule = _bounds(info) or str(err["msg"]).removeprefix("Input should be ")
        nouns: dict[object, str] = {int: "a whole number ", float: "a number "}
        noun = nouns.get(info.annotation, "") if info else ""
        return f"must be {noun}{rule}", True
    if etype in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number", True
    if etype in ("float_type", "float_parsing"):
        return "must be a number", True
    if etype in ("bool_type", "bool_parsing"):
        return "must be true or false", True
    if etype == "string_type":
        return "must be a string (quote it in YAML)", True
    if etype in ("dict_type", "model_type", "model_attributes_type"):
        holder, info = _walk(root, loc)
        model = _model_in(info.annotation) if info else None
        msg = "must be a mapping"
        if model:
            msg += " with fields " + ", ".join(repr(a) for a in _allowed_fields(model))
        return msg, True
    if etype == "list_type":
        return "must be a list", True
    if etype in ("value_error", "assertion_error"):
        text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return text, not isinstance(err.get("input"), dict | list)
    return str(err["msg"]), True


def problems_from(
    exc: ValidationError, root: type[BaseModel], *, source: str, document: int | None, kind: str | None,
    name: str | None,
) -> list[Problem]:
    """Translate pydantic's errors into Problems with camelCase paths."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message, show = _message(err, root)
        value = short_repr(err.get("input")) if show else None
        out.append(Problem(source=source, document=document, kind=kind, name=name, path=format_path(loc),
                           value=value, message=message))
    return out
