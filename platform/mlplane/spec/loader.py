"""Read and write spec YAML: one or many documents, every problem reported at once."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import ValidationError

from mlplane.spec.common import API_VERSION
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.errors import Problem, SpecError, problems_from, short_repr
from mlplane.spec.platform import Platform

Resource: TypeAlias = Platform | ModelDeployment

# Kinds by name: a new resource registers here and nowhere else.
KINDS: dict[str, type[Resource]] = {"Platform": Platform, "ModelDeployment": ModelDeployment}
API_VERSIONS = (API_VERSION,)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once per mapping)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _choices(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


def load_dict(data: Any, *, source: str = "<object>", document: int | None = 1) -> Resource:
    """Validate one parsed document (a dict) into a resource; raises SpecError."""
    where: dict[str, Any] = {"source": source, "document": document}
    if not isinstance(data, dict):
        raise SpecError([Problem(**where, value=short_repr(data), message=(
            "a document must be a mapping with apiVersion, kind, metadata and spec"))])
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None
    where.update(kind=kind if isinstance(kind, str) and kind in KINDS else None, name=name)
    problems = []
    api = data.get("apiVersion")
    if api is None:
        problems.append(Problem(**where, path="apiVersion",
                                message=f"required field is missing; supported: {_choices(API_VERSIONS)}"))
    elif not isinstance(api, str) or api not in API_VERSIONS:
        problems.append(Problem(**where, path="apiVersion", value=short_repr(api),
                                message=f"unknown apiVersion; supported: {_choices(API_VERSIONS)}"))
    if kind is None:
        problems.append(Problem(**where, path="kind",
                                message=f"required field is missing; supported kinds: {_choices(KINDS)}"))
    elif not isinstance(kind, str) or kind not in KINDS:
        problems.append(Problem(**where, path="kind", value=short_repr(kind),
                                message=f"unknown kind; supported kinds: {_choices(KINDS)}"))
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if problems or model is None:  # no model: the kind's problem is in `problems`
        raise SpecError(problems)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from(exc, model, **where)) from None


def _yaml_problem(exc: yaml.YAMLError, source: str, document: int) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    message = "YAML syntax error" + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    message += f": {problem}"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and cmark:
        message += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
    return Problem(source=source, document=document, message=message)


def load_text(text: str, source: str = "<string>") -> list[Resource]:
    """Parse one or many YAML documents ('---') into resources; raises SpecError listing every problem."""
    docs: list[tuple[int, Any]] = []
    try:
        for index, data in enumerate(yaml.load_all(text, Loader=_StrictLoader), start=1):
            docs.append((index, data))
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc, source, len(docs) + 1)]) from None
    docs = [(i, d) for i, d in docs if d is not None]
    if not docs:
        message = "no documents found (the file is empty); expected apiVersion, kind, metadata and spec"
        raise SpecError([Problem(source=source, message=message)])
    resources: list[Resource] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for index, data in docs:
        try:
            res = load_dict(data, source=source, document=index)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        key = (res.kind, res.metadata.name)
        if key in seen:
            message = f"duplicate {res.kind} name; document {seen[key]} has the same name"
            problems.append(Problem(source=source, document=index, kind=res.kind, name=res.metadata.name,
                                    path="metadata.name", message=message))
        seen.setdefault(key, index)
        resources.append(res)
    if problems:
        raise SpecError(problems)
    return resources


def load_file(path: str | PathLike[str]) -> list[Resource]:
    """Read a YAML file of one or many documents; raises SpecError (also when unreadable)."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(source=source, message="file not found")]) from None
    except IsADirectoryError:
        raise SpecError([Problem(source=source, message="is a directory; expected a YAML file")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(source=source, message=f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise SpecError([Problem(source=source, message=f"cannot read file: {exc.strerror}")]) from None
    return load_text(text, source=source)


def dump_yaml(resources: list[Resource]) -> str:
    """Multi-document YAML that `load_text` reads back to equal resources."""
    return yaml.safe_dump_all([r.to_dict() for r in resources], sort_keys=False, explicit_start=True)
