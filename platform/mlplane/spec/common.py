"""Shared building blocks: the base model, metadata, status and constrained string types."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from mlplane.spec.rules import Rule, violations

API_VERSION: Final = "mlplane.io/v1alpha1"  # Final: its type is the literal, as the models declare it

Runtime = Literal["kserve", "triton", "ray"]

_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_RULE = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters, "
    "starting and ending with a letter or digit (e.g. 'iris-classifier')"
)


class SpecModel(BaseModel):
    """Base of every spec model: camelCase in YAML, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
        validate_default=False,
    )

    #: Cross-field rules (mlplane.spec.rules): checked here, generated into the CRD as CEL.
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Any:
        failed = violations(self)
        if failed:
            raise ValueError("; ".join(failed))
        return self


# Where a field takes effect, when not everywhere: `x-mlplane-scope` in the JSON Schema (and the spec reference).
#   local    — only the local runtime (`mlplane up`) reads it; the cluster render has no use for it.
#   resource — it describes the resource itself and is not copied onto the objects rendered from it.
SCOPE_KEY = "x-mlplane-scope"
_SCOPE_NOTES = {"local": "Local runtime only.", "resource": "Kept on the resource, not copied onto what it creates."}


def scoped(scope: Literal["local", "resource"], description: str) -> dict[str, Any]:
    """`Field(**scoped("local", "..."))`: the description with its scope note, and the scope in the schema."""
    return {"description": f"{description} {_SCOPE_NOTES[scope]}", "json_schema_extra": {SCOPE_KEY: scope}}


def field_scope(info: Any) -> str | None:
    """The declared scope of a pydantic FieldInfo, if any."""
    extra = info.json_schema_extra
    return extra.get(SCOPE_KEY) if isinstance(extra, dict) else None


def _check_dns_label(value: str) -> str:
    if len(value) > 63 or not re.match(_DNS1123_LABEL, value):
        raise ValueError(_DNS_RULE)
    return value


DnsLabel = Annotated[
    str,
    AfterValidator(_check_dns_label),
    WithJsonSchema({"type": "string", "pattern": _DNS1123_LABEL, "maxLength": 63}),
]

# Kubernetes label keys ([prefix/]name) and values, as the API server validates them.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = rf"^({_LABEL_NAME})?$"
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_RULE = ("must be a Kubernetes label value: at most 63 characters, empty or letters, digits, '-', '_' "
                    "and '.', starting and ending with a letter or digit")
LABEL_KEY_RULE = ("must be a Kubernetes label key: an optional DNS subdomain prefix (at most 253 characters) and "
                  "'/', then a name of at most 63 letters, digits, '-', '_' and '.', starting and ending with a "
                  "letter or digit (e.g. 'team' or 'example.com/team')")


def label_problem(key: Any, value: Any) -> str | None:
    """What is wrong with one label (or node-selector entry), or None."""
    if not isinstance(key, str) or not key:
        return f"label key {key!r} {LABEL_KEY_RULE}"
    prefix, _, name = key.rpartition("/")
    if (len(name) > 63 or not re.fullmatch(_LABEL_NAME, name)
            or ("/" in key and (not prefix or len(prefix) > 253 or not re.match(_DNS1123_SUBDOMAIN, prefix)))):
        return f"label key {key[:80]!r}{'…' if len(key) > 80 else ''} {LABEL_KEY_RULE}"
    if not isinstance(value, str) or len(value) > 63 or not re.match(_LABEL_VALUE, value):
        shown = value[:80] + "…" if isinstance(value, str) and len(value) > 80 else value
        length = f" (got {len(value)} characters)" if isinstance(value, str) and len(value) > 63 else ""
        return f"label {key!r}: value {shown!r}{length} {LABEL_VALUE_RULE}"
    return None


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for k, v in value.items():
        problem = label_problem(k, v)
        if problem:
            raise ValueError(problem)
    return value


Labels = Annotated[
    dict[str, str],
    AfterValidator(_check_labels),
    WithJsonSchema({"type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE}}),
]

# Kubernetes resource quantities: a non-negative decimal number with an optional SI or binary suffix.
_QUANTITY = r"^(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|Ki|Mi|Gi|Ti|Pi|Ei)?$"
QUANTITY_RULE = (
    "must be a Kubernetes quantity: a number with an optional suffix, e.g. '500m', '2', '0.5' for cpu "
    "or '512Mi', '2Gi', '1G' for memory (suffixes: m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei)"
)


def _number_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return format(value, "g") if isinstance(value, float) else str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.match(_QUANTITY, value):
        raise ValueError(QUANTITY_RULE)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_number_to_str),
    AfterValidator(_check_quantity),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _QUANTITY}, {"type": "number", "minimum": 0}]}),
]


class Metadata(SpecModel):
    """Kubernetes-style object metadata."""

    name: DnsLabel = Field(description="Object name; a DNS-1123 label (lowercase, digits, '-', ≤ 63 chars).")
    namespace: DnsLabel | None = Field(
        default=None, description="Kubernetes namespace; unset means the current or default namespace."
    )
    labels: Labels = Field(default_factory=dict, description="Labels copied onto created objects (Kubernetes "
                           "label keys and values: values at most 63 characters).")
    annotations: dict[str, str] = Field(default_factory=dict, **scoped("resource", "Free-form annotations."))


class Condition(SpecModel):
    """One observed condition, as in Kubernetes `status.conditions`."""

    type: str = Field(description="Condition type, e.g. 'Ready'.")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str | None = Field(default=None, description="CamelCase machine-readable reason.")
    message: str | None = Field(default=None, description="Human-readable details.")
    last_transition_time: str | None = Field(
        default=None, description="RFC 3339 time the status last changed."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


class Status(SpecModel):
    """Observed state, written by runtimes; never required in input."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation last acted upon by the runtime."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Observed conditions.")
