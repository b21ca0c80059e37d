"""The `Platform` resource: shared services (tracking, features, vectors) and serving defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlplane.spec.common import API_VERSION, Metadata, Runtime, SpecModel, Status


class TrackingSpec(SpecModel):
    """MLflow tracking server and model registry."""

    mode: Literal["embedded", "external"] = Field(
        default="embedded",
        description="'embedded': the local runtime starts MLflow; 'external': use the server at `uri`.",
    )
    uri: str | None = Field(default=None, description="Tracking URI; required when mode is 'external'.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Port for the embedded server; unset picks a free port."
    )
    backend_store_uri: str | None = Field(
        default=None, description="MLflow backend store URI; unset lets the runtime decide."
    )
    artifacts_destination: str | None = Field(
        default=None, description="Where MLflow stores artifacts; unset lets the runtime decide."
    )

    @model_validator(mode="after")
    def _external_needs_uri(self) -> TrackingSpec:
        if self.mode == "external" and not self.uri:
            raise ValueError("mode 'external' needs `uri` (e.g. 'http://mlflow.example:5000'); "
                             "or use mode 'embedded'")
        return self


class OnlineStoreSpec(SpecModel):
    """Feast online store."""

    type: Literal["sqlite", "redis", "postgres"] = Field(default="sqlite", description="Online store type.")


class OfflineStoreSpec(SpecModel):
    """Feast offline store."""

    type: Literal["file", "bigquery", "snowflake", "redshift"] = Field(
        default="file", description="Offline store type."
    )


class FeatureStoreSpec(SpecModel):
    """Feast feature store."""

    enabled: bool = Field(default=False, description="Run a Feast feature store.")
    project: str = Field(default="mlplane", description="Feast project name.")
    online_store: OnlineStoreSpec = Field(default_factory=OnlineStoreSpec, description="Online store.")
    offline_store: OfflineStoreSpec = Field(default_factory=OfflineStoreSpec, description="Offline store.")


class VectorStoreSpec(SpecModel):
    """Milvus vector store."""

    enabled: bool = Field(default=False, description="Run a vector store.")
    backend: Literal["milvus-lite", "milvus"] = Field(
        default="milvus-lite", description="'milvus-lite' (embedded file) or 'milvus' (a server at `uri`)."
    )
    uri: str | None = Field(
        default=None, description="Milvus URI or milvus-lite file; unset lets the runtime decide."
    )


class ServingSpec(SpecModel):
    """Defaults for model servers."""

    host: str = Field(default="127.0.0.1", description="Address model servers bind to.")
    grpc: bool = Field(default=True, description="Also serve the gRPC (Open Inference Protocol) endpoint.")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    grace_period_seconds: int = Field(
        default=30, ge=0, description="Seconds to drain in-flight requests before a server stops."
    )
    default_runtime: Runtime = Field(
        default="kserve", description="Runtime used by deployments that do not name one."
    )


class Toleration(SpecModel):
    """A Kubernetes toleration."""

    key: str = Field(description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="'Exists' or 'Equal'.")
    value: str | None = Field(default=None, description="Taint value (with operator 'Equal').")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(description="Taint effect.")


def _default_tolerations() -> list[Toleration]:
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


class GpuNodePoolSpec(SpecModel):
    """How GPU workloads are placed on nodes."""

    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node labels GPU pods must match.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=_default_tolerations, description="Tolerations added to GPU pods."
    )
    gpu_resource_name: str = Field(default="nvidia.com/gpu", description="Extended resource name for GPUs.")
    gpu_headroom: int = Field(
        default=0,
        ge=0,
        description="GPUs kept free in the pool for rolling updates: a GPU deployment starts a new pod "
        "before stopping an old one (surge) only when its GPUs per replica fit in this headroom; "
        "otherwise it replaces pods one at a time.",
    )


class PlatformSpec(SpecModel):
    """Desired state of the platform; every section is optional."""

    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking and registry.")
    feature_store: FeatureStoreSpec = Field(
        default_factory=FeatureStoreSpec, description="Feature store (Feast); off by default."
    )
    vector_store: VectorStoreSpec = Field(
        default_factory=VectorStoreSpec, description="Vector store (Milvus); off by default."
    )
    serving: ServingSpec = Field(default_factory=ServingSpec, description="Model server defaults.")
    gpu_node_pool: GpuNodePoolSpec = Field(default_factory=GpuNodePoolSpec, description="GPU placement.")


class Platform(SpecModel):
    """The platform: shared services and defaults for every deployment."""

    api_version: Literal["mlplane.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["Platform"] = Field(default="Platform", description="Resource kind.")
    metadata: Metadata = Field(description="Object metadata.")
    spec: PlatformSpec = Field(default_factory=PlatformSpec, description="Desired state.")
    status: Status | None = Field(default=None, description="Observed state, written by runtimes.")

    @field_validator("spec", mode="before")
    @classmethod
    def _null_spec_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @classmethod
    def default(cls) -> Platform:
        """The platform used when the user gives none: named 'local', all defaults."""
        return cls(metadata=Metadata(name="local"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with camelCase keys, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
