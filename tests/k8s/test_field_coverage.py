"""Nothing silently dropped: every spec field renders or is refused.

The walk goes over the ModelDeployment and Platform models field by field, sets each leaf to a valid
non-default value in a few base specs, and renders. A field passes when, for each runtime, the change
either reaches what the cluster gets (the rendered objects, the Triton repository's config.pbtxt, the
Ray serve config inside the RayService, the Platform's children and ingestion Jobs) in some base, or is
refused (validation or render error) in every base. Fields that only the local runtime reads, or that
describe the resource itself, carry `x-mlplane-scope` in the model; the walk holds that declaration.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mlplane.core.signature import TensorMeta
from mlplane.k8s import ResolvedArtifact, render
from mlplane.k8s.ingest import render_ingest
from mlplane.spec import ModelDeployment, Platform, SpecError, load_dict
from mlplane.spec.common import field_scope
from mlplane.triton.repository import TritonRepoError, cluster_repository

ARTIFACT = ResolvedArtifact(registry_version="7", storage_uri="s3://mlflow-artifacts/1/abc/artifacts/model")
INPUTS = [TensorMeta("x", "FP32", (-1, 4))]
OUTPUTS = [TensorMeta("y", "FP32", (-1,))]
API = "mlplane.io/v1alpha1"

# Valid values for fields whose type alone does not give one (constrained strings, lists of objects).
SAMPLES: dict[str, Any] = {
    "metadata.name": "other",
    "metadata.namespace": "team-a",
    "spec.model": "models:/other/3",
    "spec.resources.gpuType": "NVIDIA-H100-80GB-HBM3",
    "spec.coldStartSeconds": 1200,  # longer than the scale-down windows of the bases
    "spec.features.entityKey": "user",
    "spec.features.features": ["v:a", "v:c"],
    "spec.features.defaults": {"v:a": 1.5},
    "spec.retrieval.collection": "other_docs",
    "spec.rag.embedder.model": "models:/other-embedder/2",
    "spec.rag.generator.url": "http://other:8080",
    "spec.rag.generator.modelName": "other",
    "spec.rag.generator.apiKeyEnv": "OTHER_KEY",
    "spec.batching.preferredBatchSizes": [4],
    "spec.tracking.uri": "http://mlflow.other:5000",
    "spec.featureStore.project": "other",
    "spec.featureStore.registry": "s3://other/registry.db",
    "spec.featureStore.onlineStore.options": {"host": "other"},
    "spec.featureStore.onlineStore.secrets": {"password": {"name": "s", "key": "k"}},
    "spec.featureStore.offlineStore.options": {"path": "/other"},
    "spec.featureStore.offlineStore.secrets": {"connection_string": {"name": "s", "key": "k"}},
    "spec.vectorStore.uri": "http://milvus.other:19530",
    "spec.vectorStore.embeddingModel": "models:/other-embedder/1",
    "spec.vectorStore.collections": [{"name": "other", "source": "/other", "schedule": "@daily"}],
    "spec.vectorStore.tokenSecret": {"name": "other", "key": "token"},
    "spec.gpuNodePool.tolerations": [{"key": "other", "operator": "Exists", "effect": "NoExecute"}],
    "spec.gpuNodePool.gpuResourceName": "amd.com/gpu",
    "spec.gpuNodePool.gpuProductLabel": "amd.com/gpu.product-name",
    "spec.serving.serviceAccountName": "other-sa",
}

MODEL = "models:/iris@champion"
FEATURES = {"entityKey": "id", "features": ["v:a", "v:b"]}
BATCHING = {"maxBatchSize": 8, "maxLatencyMs": 5}
SCALING = {"minReplicas": 1, "maxReplicas": 3, "target": {"metric": "concurrency", "value": 4}}

# runtime → base specs; a field counts as rendered for a runtime if it changes the output of one base.
DEPLOYMENT_BASES: dict[str, list[dict[str, Any]]] = {
    "kserve": [
        {"model": MODEL, "runtime": "kserve"},
        {"model": MODEL, "runtime": "kserve", "replicas": 2, "resources": {"gpus": 1}, "features": FEATURES,
         "rollout": {"canaryTrafficPercent": 10}},
        {"model": MODEL, "runtime": "kserve", "autoscaling": SCALING, "resources": {"gpus": 1, "gpuType": "NVIDIA-L4"},
         "rollout": {"allowOutage": False}, "coldStartSeconds": 900},
    ],
    "triton": [
        {"model": MODEL, "runtime": "triton"},
        {"model": MODEL, "runtime": "triton", "autoscaling": SCALING, "batching": BATCHING,
         "resources": {"gpus": 1, "gpuType": "NVIDIA-L4"}, "rollout": {"allowOutage": False},
         "coldStartSeconds": 900},
        {"model": MODEL, "runtime": "triton", "replicas": 2, "rollout": {"allowOutage": True}},
    ],
    "ray": [
        {"model": MODEL, "runtime": "ray", "rag": {}},
        {"model": MODEL, "runtime": "ray", "autoscaling": SCALING, "batching": BATCHING,
         "retrieval": {"collection": "docs"}, "resources": {"gpus": 1, "gpuType": "NVIDIA-L4"},
         "rag": {"embedder": {"resources": {"gpus": 1, "gpuType": "NVIDIA-L4"}}}},
        {"model": MODEL, "runtime": "ray", "rag": {"generator": {"type": "openai", "url": "http://llm:8080",
                                                                 "modelName": "m", "apiKeyEnv": "K"}}},
    ],
}

RICH_PLATFORM: dict[str, Any] = {
    "tracking": {"mode": "external", "uri": "http://mlflow:5000"},
    "featureStore": {"enabled": True, "registry": "s3://b/registry.db",
                     "onlineStore": {"type": "redis", "options": {"host": "redis"}}},
    "vectorStore": {"enabled": True, "backend": "milvus", "uri": "http://milvus:19530",
                    "index": {"type": "IVF_FLAT"},
                    "collections": [{"name": "docs", "source": "/docs", "schedule": "@hourly"}]},
    "auth": {"enabled": True},
}
PLATFORM_BASES: list[dict[str, Any]] = [{}, RICH_PLATFORM,
                                        {**RICH_PLATFORM, "vectorStore": {**RICH_PLATFORM["vectorStore"],
                                                                          "index": {"type": "HNSW"}}}]


# --------------------------------------------------------------------------- walking the models
def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found:
                return found
    return None


def leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted camelCase path, field) of every leaf; nested objects are walked, lists and maps are leaves.
    Fields with a declared scope are not walked (the declaration is what the test holds)."""
    for name, info in model.model_fields.items():
        alias = info.alias or name
        path = f"{prefix}.{alias}" if prefix else alias
        if path in ("apiVersion", "kind", "status") or field_scope(info):
            continue
        child = _model_in(info.annotation)
        if child is not None and typing.get_origin(info.annotation) is not list:
            yield from leaves(child, path)
        else:
            yield path, info


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = _literal_values(arg)
        if found:
            return found
    return ()


def _bound(info: FieldInfo, name: str) -> Any:
    return next((getattr(m, name) for m in info.metadata if getattr(m, name, None) is not None), None)


def variants(path: str, info: FieldInfo, current: Any) -> list[Any]:
    """Valid values other than `current` to set the field to."""
    if path in SAMPLES:
        return [SAMPLES[path]]
    literals = _literal_values(info.annotation)
    if literals:
        return [v for v in literals if v != current]
    default = current if current is not None else info.get_default(call_default_factory=True, validated_data={})
    kind = info.annotation
    if kind is bool or (isinstance(default, bool)):
        return [not bool(default)]
    args = set(typing.get_args(kind)) | {kind}
    if int in args or float in args:
        lo = _bound(info, "ge") if _bound(info, "ge") is not None else _bound(info, "gt")
        hi = _bound(info, "le")
        base = default if isinstance(default, int | float) else (lo or 0)
        value = base + 1 if hi is None or base + 1 <= hi else base - 1
        if lo is not None and value < lo:
            value = lo + 1
        return [value if int in args else float(value) + 0.5]
    if typing.get_origin(kind) is dict or dict in args or "Quantity" in str(kind) or typing.get_origin(kind) in (
            types.UnionType, typing.Union):
        name = path.rsplit(".", 1)[-1]
        if name in ("cpu",):
            return ["3"]
        if name == "memory":
            return ["3Gi"]
        if name in ("labels", "nodeSelector"):
            return [{"team": "other"}]
    if str in args or kind is str or "str" in str(kind):
        return ["other-value"]
    raise AssertionError(f"{path}: no sample value for {kind}; add one to SAMPLES")


def _get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- what the cluster gets
def _deployment_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelDeployment", "metadata": {"name": "m", "namespace": "ml"}, "spec": spec}


def _platform_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Platform", "metadata": {"name": "p", "namespace": "ml"}, "spec": spec}


def cluster_output(deployment_doc: dict[str, Any], platform_doc: dict[str, Any]) -> str | None:
    """Everything the cluster gets for the two documents, as text; None when they are refused."""
    try:
        dep = load_dict(deployment_doc)
        platform = load_dict(platform_doc)
        assert isinstance(dep, ModelDeployment) and isinstance(platform, Platform)
        objects: list[Any] = render(dep, platform, ARTIFACT)
        if dep.spec.runtime == "triton":
            objects.append(cluster_repository(dep.metadata.name, "7", INPUTS, OUTPUTS, dep.spec).files)
        for collection in platform.spec.vector_store.collections:
            objects += render_ingest(platform, collection.name)
        objects += _platform_children(platform)
    except (SpecError, ValidationError, ValueError, TritonRepoError):
        return None
    return yaml.safe_dump_all(objects, sort_keys=True)


def _platform_children(platform: Platform) -> list[Any]:
    """The Platform's own children (the operator's plan), where the operator package is installed."""
    try:
        from mlplane_operator.platform_plan import children
    except ImportError:
        return []
    body = {"metadata": {"name": platform.metadata.name, "namespace": platform.metadata.namespace}}
    return children(platform, body, {"kind": "Platform", "name": platform.metadata.name}, None)


def _reaches(outputs: list[tuple[str | None, str | None]]) -> str:
    """'renders', 'refused' or 'dropped' over (base output, changed output) pairs: a change that alters the
    output of an accepted base, or makes an accepted base refused, reaches the cluster path."""
    if all(changed is None for _, changed in outputs):
        return "refused"
    return "renders" if any(base is not None and base != changed for base, changed in outputs) else "dropped"


DEPLOYMENT_LEAVES = [p.removeprefix("spec.") for p, _ in leaves(ModelDeployment) if p.startswith("spec.")]
METADATA_LEAVES = [p for p, _ in leaves(ModelDeployment) if p.startswith("metadata.")]
PLATFORM_LEAVES = [p.removeprefix("spec.") for p, _ in leaves(Platform) if p.startswith("spec.")]
_INFO = {p: i for p, i in [*leaves(ModelDeployment), *leaves(Platform)]}


@pytest.mark.parametrize("runtime", sorted(DEPLOYMENT_BASES))
def test_every_deployment_field_renders_or_is_refused(runtime: str) -> None:
    platform = _platform_doc(RICH_PLATFORM)
    dropped = []
    bases = [(spec, cluster_output(_deployment_doc(spec), platform)) for spec in DEPLOYMENT_BASES[runtime]]
    for path in DEPLOYMENT_LEAVES:
        outputs = []
        for spec, base in bases:
            for value in variants(f"spec.{path}", _INFO[f"spec.{path}"], _get(spec, path)):
                outputs.append((base, cluster_output(_deployment_doc(_set(spec, path, value)), platform)))
        if _reaches(outputs) == "dropped":
            dropped.append(path)
    assert not dropped, (f"runtime {runtime}: spec fields accepted but reaching nothing the cluster gets: "
                         f"{dropped}; render them, refuse them (mlplane.spec.rules) or declare their scope")


def test_every_base_renders() -> None:
    """The walk means something only if its bases are valid."""
    for runtime, specs in DEPLOYMENT_BASES.items():
        for spec in specs:
            assert cluster_output(_deployment_doc(spec), _platform_doc(RICH_PLATFORM)) is not None, (runtime, spec)
    for platform in PLATFORM_BASES:
        assert cluster_output(_deployment_doc(DEPLOYMENT_BASES["kserve"][0]), _platform_doc(platform)) is not None


def test_deployment_metadata_renders() -> None:
    spec = DEPLOYMENT_BASES["kserve"][0]
    base = cluster_output(_deployment_doc(spec), _platform_doc({}))
    for path in METADATA_LEAVES:
        for value in variants(path, _INFO[path], None):
            assert cluster_output(_set(_deployment_doc(spec), path, value), _platform_doc({})) != base, path


def test_every_platform_field_renders_or_is_refused() -> None:
    # The fullest base of each runtime (GPUs, features, autoscaling, RAG) reads the most Platform fields.
    deployments = [_deployment_doc(specs[1]) for specs in DEPLOYMENT_BASES.values()]
    deployments.append(_deployment_doc({"model": MODEL}))  # no runtime: the Platform's default applies
    base_outputs = {i: [cluster_output(dep, _platform_doc(platform)) for dep in deployments]
                    for i, platform in enumerate(PLATFORM_BASES)}
    dropped = []
    for path in PLATFORM_LEAVES:
        outputs = []
        for i, platform in enumerate(PLATFORM_BASES):
            for value in variants(f"spec.{path}", _INFO[f"spec.{path}"], _get(platform, path)):
                changed = _platform_doc(_set(platform, path, value))
                outputs += [(base, cluster_output(dep, changed))
                            for dep, base in zip(deployments, base_outputs[i], strict=True)]
                if any(b is not None and c is not None and b != c for b, c in outputs):
                    break
        if _reaches(outputs) == "dropped":
            dropped.append(path)
    assert not dropped, (f"Platform fields accepted but reaching nothing the cluster gets: {dropped}; render "
                         "them, refuse them (mlplane.spec.rules) or declare their scope")


def test_scoped_fields_are_few_and_declared_in_the_schema() -> None:
    scoped = {p: field_scope(i) for model in (ModelDeployment, Platform) for p, i in _all_fields(model)
              if field_scope(i)}
    assert scoped == {
        "metadata.annotations": "resource",
        "spec.tracking.port": "local",
        "spec.tracking.backendStoreUri": "local",
        "spec.tracking.artifactsDestination": "local",
        "spec.featureStore.port": "local",
        "spec.vectorStore.port": "local",
        "spec.serving.host": "local",
        "spec.serving.grpc": "local",
        "spec.vectorStore.enabled": "local",
        "spec.platform": "resource",  # names the Platform the operator passes to the render
        "metadata": "resource",  # a Platform's metadata names the Platform object
    }
    schema = Platform.model_json_schema(by_alias=True)
    assert schema["$defs"]["ServingSpec"]["properties"]["host"]["x-mlplane-scope"] == "local"


def _all_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        alias = info.alias or name
        path = f"{prefix}.{alias}" if prefix else alias
        yield path, info
        child = _model_in(info.annotation)
        if child is not None and not field_scope(info):
            yield from _all_fields(child, path)
