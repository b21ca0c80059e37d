"""The `ModelDeployment` resource: one model served by one runtime."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from mlplane.spec import rules
from mlplane.spec.common import API_VERSION, DnsLabel, Metadata, Quantity, Runtime, SpecModel, Status, scoped
from mlplane.spec.modelref import ModelRef, ModelRefError, parse_model_ref
from mlplane.spec.rules import Rule


def _check_model(value: str) -> str:
    try:
        parse_model_ref(value)
    except ModelRefError as exc:
        raise ValueError(exc.detail) from None
    return value


def _check_feature(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_\-]+:[A-Za-z0-9_\-]+$", value):
        raise ValueError("must be '<feature_view>:<feature>' (letters, digits, '_' or '-' on each side), "
                         "e.g. 'driver_stats:avg_trips'")
    return value


ModelUri = Annotated[str, AfterValidator(_check_model)]
FeatureName = Annotated[str, AfterValidator(_check_feature)]
# Scalars of any type: a free-form object in JSON Schema and CRDs (which cannot express the union).
FeatureDefaults = Annotated[dict[FeatureName, float | int | str | bool], Field(max_length=256),
                            WithJsonSchema({"type": "object", "maxProperties": 256})]


class ScaleTarget(SpecModel):
    """The metric autoscaling tracks, and its per-replica target."""

    metric: Literal["concurrency", "rps", "gpu-utilization", "queue-depth"] = Field(
        default="concurrency", description="Metric to scale on."
    )
    value: float = Field(gt=0, description="Target value per replica (e.g. 10 in-flight requests).")


class ScalePolicy(SpecModel):
    """How quickly to scale in one direction."""

    stabilization_window_seconds: int = Field(
        default=0, ge=0, description="Seconds of consistent recommendation before scaling."
    )


class AutoscalingSpec(SpecModel):
    """Replica bounds and the scaling target."""

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas; 0 allows scale to zero.")
    max_replicas: int = Field(default=1, ge=1, description="Most replicas; must be ≥ minReplicas.")
    target: ScaleTarget | None = Field(
        default=None, description="Scaling target; unset uses the runtime default."
    )
    scale_up: ScalePolicy = Field(default_factory=ScalePolicy, description="Scale-up behaviour.")
    scale_down: ScalePolicy = Field(
        default_factory=lambda: ScalePolicy(stabilization_window_seconds=300),
        description="Scale-down behaviour.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.AUTOSCALING


class ResourceList(SpecModel):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU quantity, e.g. '500m' or '2'.")
    memory: Quantity | None = Field(default=None, description="Memory quantity, e.g. '512Mi' or '2Gi'.")


class ResourcesSpec(SpecModel):
    """Compute resources for each replica."""

    requests: ResourceList | None = Field(default=None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(default=None, description="Resource ceilings.")
    gpus: int = Field(default=0, ge=0, description="GPUs per replica.")
    gpu_type: str | None = Field(
        default=None, max_length=63, pattern=r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$",
        description="GPU product to run on: the value of GPU feature discovery's product node label (the "
                    "Platform's `gpuNodePool.gpuProductLabel`, `nvidia.com/gpu.product`), e.g. 'NVIDIA-L4' or "
                    "'NVIDIA-A100-SXM4-80GB'; rendered as a node selector. Needs `gpus`.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.RESOURCES


class BatchingSpec(SpecModel):
    """Server-side dynamic batching (triton, ray)."""

    max_batch_size: int = Field(ge=1, description="Largest batch assembled.")
    max_latency_ms: float = Field(gt=0, description="Longest a request waits for a batch to fill.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, max_length=16,
        description="Batch sizes the batcher tries to form first (triton: dynamic_batching "
                    "preferred_batch_size); each at most maxBatchSize. Unset: maxBatchSize.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.BATCHING


class FeaturesSpec(SpecModel):
    """Online features joined to each request (Feast), like KServe's Feast transformer.

    A request sends the entity ids as the V2 input named `entityKey` (INT64 or BYTES) instead of the
    feature columns; the server reads the features from the online store and joins them, by feature
    name, to the model's signature columns.
    """

    entity_key: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=255,
        description="Request input holding the entity ids; the Feast entity's join key (e.g. 'flower_id').",
    )
    features: list[FeatureName] = Field(
        min_length=1, max_length=256,
        description="Features to fetch, as '<feature_view>:<feature>'; each feature name is a model input.",
    )
    on_missing: Literal["error", "default"] = Field(
        default="error",
        description="An entity without online values: 'error' answers 404 naming it; 'default' uses `defaults` "
        "(a feature without one: NaN in a floating-point column, else the request is refused with 404).",
    )
    defaults: FeatureDefaults = Field(
        default_factory=dict,
        description="Value per feature ('<feature_view>:<feature>') used for a missing one when onMissing "
        "is 'default'.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.FEATURES  # name clashes among features: Python-only there


class RetrievalSpec(SpecModel):
    """Retrieval-augmented generation from a vector collection."""

    collection: str = Field(description="Vector store collection to search.")
    top_k: int = Field(default=4, ge=1, le=100, description="Chunks retrieved per query.")
    # Chunking is the collection's (Platform `spec.vectorStore.collections[].chunkSize`), not the reader's.


class EmbedderSpec(SpecModel):
    """The embedding model of a RAG service (an MLflow pyfunc: texts in, normalised vectors out)."""

    model: ModelUri = Field(
        default="models:/mlplane-embedder@champion",
        description="Embedder to load; moving its alias needs the collection re-ingested with the new model.",
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="Per-replica resources of the Embedder (Ray actor options and, in the cluster, the worker "
                    "pods it runs on); unset: 1 CPU, no GPU.",
    )


GeneratorType = Literal["local", "extractive", "openai", "kserve-v2"]


class GeneratorSpec(SpecModel):
    """What writes the answer from the retrieved chunks."""

    type: GeneratorType = Field(
        default="local",
        description="'local': the small CPU model in `spec.model` (an MLflow pyfunc); 'extractive': the "
                    "best-matching sentences of the chunks, no model; 'openai': any OpenAI-compatible "
                    "`/v1/chat/completions` server at `url`; 'kserve-v2': a KServe V2 `generate` endpoint at `url`.",
    )
    url: str | None = Field(
        default=None, description="Base URL of the remote server (openai, kserve-v2), e.g. 'http://llm:8080'."
    )
    model_name: str | None = Field(
        default=None, description="Model name on the remote server (openai: `model`; kserve-v2: the path segment)."
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the remote server's API key (never the key itself)."
    )
    max_tokens: int = Field(default=256, ge=1, le=8192, description="Most tokens generated per answer.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    timeout_seconds: float = Field(default=120, gt=0, description="Remote request timeout.")

    RULES: ClassVar[tuple[Rule, ...]] = rules.GENERATOR


class RagSpec(SpecModel):
    """A retrieval-augmented generation service (runtime 'ray'): embedder → retriever → generator."""

    embedder: EmbedderSpec = Field(default_factory=EmbedderSpec, description="Embedding model.")
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec, description="Answer generator.")
    max_question_chars: int = Field(
        default=2000, ge=1, description="Longest question (last user message) accepted; longer ones get 413."
    )
    max_input_chars: int = Field(
        default=16000, ge=1, description="Most characters in one request's messages or embedding inputs (413 above)."
    )
    max_embedding_inputs: int = Field(
        default=256, ge=1, description="Most texts in one `/v1/embeddings` request (413 above)."
    )


class RolloutSpec(SpecModel):
    """How a new model version reaches traffic in the cluster (runtimes kserve and triton)."""

    canary_traffic_percent: int | None = Field(
        default=None, ge=0, le=100,
        description="Share of traffic (0-100) the newest version gets while the previous one keeps the rest "
                    "(KServe canaryTrafficPercent; needs KServe's Serverless mode). Unset: all traffic moves.",
    )
    allow_outage: bool = Field(
        default=False,
        description="A deployment that may run a single replica (replicas or minReplicas ≤ 1) with GPUs and no "
                    "spare GPU (`gpuNodePool.gpuHeadroom` below its GPUs per replica): false (default) — a new "
                    "version starts next to the old pod and waits for a free GPU (no outage, the rollout stays "
                    "Pending until one frees up), and node drains never evict the last ready replica; true — the "
                    "old pod stops first (an outage until the new one is ready) and drains may evict it.",
    )


class ModelDeploymentSpec(SpecModel):
    """Desired state of one model server."""

    model: ModelUri = Field(
        description="'models:/<name>@<alias>', 'models:/<name>/<version>' or a storage URI."
    )
    runtime: Runtime = Field(default="kserve", description="Model server runtime.")
    platform: DnsLabel | None = Field(
        default=None,
        **scoped("resource", "Cluster: the Platform object whose services and defaults this deployment uses, in "
                 "the deployment's namespace, else in the operator's namespace; unset: the Platform named "
                 "'default', looked up the same way. Locally the Platform given to `mlplane up -f` applies."),
    )
    replicas: int = Field(default=1, ge=0, description="Replica count when autoscaling is unset.")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Autoscaling; overrides replicas.")
    rollout: RolloutSpec | None = Field(default=None, description="Canary rollout of new versions (cluster).")
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="Per-replica resources (runtime ray: the Generator's; the Embedder's are "
                    "`rag.embedder.resources`).",
    )
    batching: BatchingSpec | None = Field(default=None, description="Dynamic batching (triton, ray).")
    instances: int = Field(
        default=1, ge=1,
        description="Model instances inside each replica's server, executing in parallel "
                    "(triton: instance_group count).",
    )
    features: FeaturesSpec | None = Field(default=None, description="Online feature lookup (Feast).")
    retrieval: RetrievalSpec | None = Field(default=None, description="Retrieval from a vector store.")
    rag: RagSpec | None = Field(
        default=None,
        description="RAG service (runtime 'ray'); `spec.model` is then the local generator, "
                    "`retrieval` the default collection, `batching` the embedder's batches.",
    )
    cold_start_seconds: float | None = Field(
        default=None, ge=0, description="Expected seconds from start to ready; used for readiness timeouts."
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.DEPLOYMENT_SPEC


class DeploymentStatus(Status):
    """Observed state of a deployment."""

    url: str | None = Field(default=None, description="HTTP endpoint.")
    grpc_url: str | None = Field(default=None, description="gRPC endpoint.")
    served_version: str | None = Field(default=None, description="Registry version being served.")
    model_uri: str | None = Field(default=None, description="Resolved artifact URI being served.")


class ModelDeployment(SpecModel):
    """A model served behind an inference endpoint."""

    api_version: Literal["mlplane.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="Resource kind.")
    metadata: Metadata = Field(description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: DeploymentStatus | None = Field(default=None, description="Observed state, written by runtimes.")

    @property
    def model_ref(self) -> ModelRef:
        """The parsed `spec.model`."""
        return parse_model_ref(self.spec.model)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with camelCase keys, without unset optional fields.

        An unnamed `spec.runtime` stays unnamed (the Platform's `serving.defaultRuntime` decides), so the
        dict reads back to a deployment that still leaves the runtime to its Platform.
        """
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if "runtime" not in self.spec.model_fields_set:
            data["spec"].pop("runtime", None)
        return data
