"""Model references: MLflow registry URIs (`models:/name@alias`, `models:/name/3`) or storage URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

# Registry names as MLflow allows them in practice; aliases as MLflow validates them.
_REGISTRY = re.compile(
    r"^models:/(?P<name>[A-Za-z0-9_.\-]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>[0-9]+))$"
)
_RUNS = re.compile(r"^runs:/[A-Za-z0-9]+/.+$")
# Storage schemes a model server can download from (KServe's storage initializer and MLflow's
# artifact repositories); `runs:` and `mlflow-artifacts:` are resolved through MLflow.
STORAGE_SCHEMES = ("s3", "gs", "wasbs", "abfss", "hdfs", "http", "https", "file", "runs", "mlflow-artifacts")

ACCEPTED_FORMS = (
    "'models:/<name>@<alias>' (e.g. 'models:/iris@champion'), "
    "'models:/<name>/<version>' (e.g. 'models:/iris/3'), "
    "or a storage URI ("
    + ", ".join(f"{s}:/..." if s in ("runs", "mlflow-artifacts") else f"{s}://..." for s in STORAGE_SCHEMES)
    + ", or an absolute local path)"
)


class _RegistryRef:
    """What both registry references share: resolved through the MLflow model registry, shown as their URI."""

    @property
    def uri(self) -> str:
        raise NotImplementedError  # each variant builds it from its parts

    @property
    def is_registry(self) -> Literal[True]:
        """True: the model is resolved through the MLflow model registry."""
        return True

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class AliasRef(_RegistryRef):
    """``models:/<name>@<alias>``: whatever version the registry alias points at."""

    name: str
    alias: str
    kind: Literal["alias"] = field(default="alias", init=False)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


@dataclass(frozen=True)
class VersionRef(_RegistryRef):
    """``models:/<name>/<version>``: one registry version (``version`` without leading zeros)."""

    name: str
    version: str
    kind: Literal["version"] = field(default="version", init=False)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class UriRef:
    """A storage URI (``s3://…``, ``runs:/…``, an absolute path …) a server loads as it is."""

    uri: str
    kind: Literal["uri"] = field(default="uri", init=False)

    @property
    def is_registry(self) -> Literal[False]:
        """False: the URI is loaded as given, not through the MLflow model registry."""
        return False

    def __str__(self) -> str:
        return self.uri


# A parsed model reference, tagged by `kind`: checking `ref.kind` narrows it to one variant.
ModelRef: TypeAlias = AliasRef | VersionRef | UriRef


class ModelRefError(ValueError):
    """An unparseable model reference; `detail` explains it without repeating the input."""

    def __init__(self, text: str, why: str) -> None:
        self.detail = f"{why}; accepted forms: {ACCEPTED_FORMS}"
        super().__init__(f"invalid model reference {text!r}: {self.detail}")


def _fail(text: str, why: str) -> ModelRefError:
    return ModelRefError(text, why)


def parse_model_ref(text: str) -> ModelRef:
    """Parse a model reference; raises ModelRefError (a ValueError) naming the accepted forms."""
    if not isinstance(text, str) or not text.strip():
        raise _fail(str(text), "empty")
    if text != text.strip():
        raise _fail(text, "leading or trailing whitespace")
    if text.startswith("models:"):
        m = _REGISTRY.match(text)
        if not m and re.match(r"^models:/[A-Za-z0-9_.\-]+$", text):
            raise _fail(text, "add '@<alias>' or '/<version>' after the registered model name")
        if not m:
            why = (
                "registry names may contain letters, digits, '_', '-' and '.', aliases letters, digits, "
                "'_' and '-', and versions must be positive integers"
            )
            raise _fail(text, why)
        version = m.group("version")
        if version is not None:
            if int(version) < 1:
                raise _fail(text, "versions must be positive integers")
            return VersionRef(m.group("name"), str(int(version)))
        return AliasRef(m.group("name"), m.group("alias"))
    if text.startswith("/"):
        return UriRef(text)
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in STORAGE_SCHEMES:
        raise _fail(text, f"unknown scheme {scheme!r}" if sep else "not a URI or absolute path")
    if scheme == "runs" and not _RUNS.match(text):
        raise _fail(text, "run URIs look like 'runs:/<run_id>/<artifact_path>'")
    if not rest.strip("/"):
        raise _fail(text, "the URI has no path")
    return UriRef(text)
