"""The mlplane spec: versioned, Kubernetes-shaped resources, their YAML loader and JSON Schemas."""

from mlplane.spec.common import API_VERSION, Condition, Metadata, Status
from mlplane.spec.deployment import ModelDeployment, ModelDeploymentSpec
from mlplane.spec.errors import Problem, SpecError
from mlplane.spec.loader import KINDS, Resource, dump_yaml, load_dict, load_file, load_text
from mlplane.spec.modelref import AliasRef, ModelRef, ModelRefError, UriRef, VersionRef, parse_model_ref
from mlplane.spec.platform import Platform, PlatformSpec

__all__ = [
    "API_VERSION",
    "KINDS",
    "AliasRef",
    "Condition",
    "Metadata",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelRef",
    "ModelRefError",
    "Platform",
    "PlatformSpec",
    "Problem",
    "Resource",
    "SpecError",
    "Status",
    "UriRef",
    "VersionRef",
    "dump_yaml",
    "load_dict",
    "load_file",
    "load_text",
    "parse_model_ref",
]
