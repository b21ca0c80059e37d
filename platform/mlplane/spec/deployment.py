"""The `ModelDeployment` resource: one model served by one runtime."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from mlplane.spec.common import API_VERSION, Metadata, Quantity, Runtime, SpecModel, Status
from mlplane.spec.modelref import ModelRef, ModelRefError, parse_model_ref


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

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"maxReplicas ({self.max_replicas}) must be greater than or equal to "
                             f"minReplicas ({self.min_replicas})")
        return self


class ResourceList(SpecModel):
    """CPU and memory amounts."""

    cpu: Quantity | None = Field(default=None, description="CPU quantity, e.g. '500m' or '2'.")
    memory: Quantity | None = Field(default=None, description="Memory quantity, e.g. '512Mi' or '2Gi'.")


class ResourcesSpec(SpecModel):
    """Compute resources for each replica."""

    requests: ResourceList | None = Field(default=None, description="Guaranteed resources.")
    limits: ResourceList | None = Field(default=None, description="Resource ceilings.")
    gpus: int = Field(default=0, ge=0, description="GPUs per replica.")
    gpu_type: str | None = Field(default=None, description="GPU model to select, e.g. 'nvidia-l4'.")


class BatchingSpec(SpecModel):
    """Server-side dynamic batching (triton, ray)."""

    max_batch_size: int = Field(ge=1, description="Largest batch assembled.")
    max_latency_ms: float = Field(gt=0, description="Longest a request waits for a batch to fill.")
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        description="Batch sizes the batcher tries to form first (triton: dynamic_batching "
                    "preferred_batch_size); each at most maxBatchSize. Unset: maxBatchSize.",
    )

    @model_validator(mode="after")
    def _preferred(self) -> BatchingSpec:
        too_big = [n for n in self.preferred_batch_sizes or [] if n > self.max_batch_size]
        if too_big:
            raise ValueError(f"preferredBatchSizes {too_big} must not exceed maxBatchSize ({self.max_batch_size})")
        return self


class FeaturesSpec(SpecModel):
    """Online features joined to each request (Feast)."""

    entity_key: str = Field(description="Request field holding the entity id.")
    features: list[FeatureName] = Field(description="Features to fetch, as '<feature_view>:<feature>'.")
    on_missing: Literal["error", "default"] = Field(
        default="error", description="What to do when a feature is missing: fail or use the default."
    )


class RetrievalSpec(SpecModel):
    """Retrieval-augmented generation from a vector collection."""

    collection: str = Field(description="Vector store collection to search.")
    top_k: int = Field(default=4, ge=1, le=100, description="Chunks retrieved per query.")
    chunk_size: int = Field(default=512, ge=1, description="Characters per chunk when indexing.")
    chunk_overlap: int = Field(default=64, ge=0, description="Characters shared by adjacent chunks.")

    @model_validator(mode="after")
    def _overlap(self) -> RetrievalSpec:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunkOverlap ({self.chunk_overlap}) must be less than "
                             f"chunkSize ({self.chunk_size})")
        return self


class ModelDeploymentSpec(SpecModel):
    """Desired state of one model server."""

    model: ModelUri = Field(
        description="'models:/<name>@<alias>', 'models:/<name>/<version>' or a storage URI."
    )
    runtime: Runtime = Field(default="kserve", description="Model server runtime.")
    replicas: int = Field(default=1, ge=0, description="Replica count when autoscaling is unset.")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Autoscaling; overrides replicas.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-replica resources.")
    batching: BatchingSpec | None = Field(default=None, description="Dynamic batching (triton, ray).")
    instances: int = Field(
        default=1, ge=1,
        description="Model instances inside each replica's server, executing in parallel "
                    "(triton: instance_group count).",
    )
    features: FeaturesSpec | None = Field(default=None, description="Online feature lookup (Feast).")
    retrieval: RetrievalSpec | None = Field(default=None, description="Retrieval from a vector store.")
    cold_start_seconds: float | None = Field(
        default=None, ge=0, description="Expected seconds from start to ready; used for readiness timeouts."
    )


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
        """Plain dict with camelCase keys, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
