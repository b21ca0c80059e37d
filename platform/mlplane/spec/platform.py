"""The `Platform` resource: shared services (tracking, features, vectors) and serving defaults."""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, field_validator, model_validator

from mlplane.spec import rules
from mlplane.spec.common import API_VERSION, DnsLabel, Labels, Metadata, Runtime, SpecModel, Status, scoped
from mlplane.spec.rules import Rule

# A key of a Secret's data, as the API server validates it.
_SECRET_KEY = r"^[-._a-zA-Z0-9]{1,253}$"


def _check_secret_key(value: str) -> str:
    if not re.match(_SECRET_KEY, value):
        raise ValueError("must be a Secret key: letters, digits, '-', '_' and '.' (e.g. 'password')")
    return value


SecretKey = Annotated[str, AfterValidator(_check_secret_key),
                      WithJsonSchema({"type": "string", "pattern": _SECRET_KEY, "maxLength": 253})]


class MlflowCredentialRef(SpecModel):
    """An MLflow user from a Kubernetes Secret in the pod's namespace: the pod gets it as
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (`secretKeyRef`), never inline."""

    secret: DnsLabel = Field(description="Name of the Secret (in the namespace of the pods that use it).")
    username_key: SecretKey = Field(default="username", description="Key of the user name in the Secret.")
    password_key: SecretKey = Field(default="password", description="Key of the password in the Secret.")


class TrackingCredentialsSpec(SpecModel):
    """Which MLflow user each kind of pod uses; a kind without one sends no credentials."""

    reader: MlflowCredentialRef | None = Field(
        default=None,
        description="Read-only user of the RayService pods (RAG/LLM apps resolve and download models).",
    )
    writer: MlflowCredentialRef | None = Field(
        default=None, description="User that may write, for the ingestion Jobs and CronJobs (they log runs).",
    )


class TrackingSpec(SpecModel):
    """MLflow tracking server and model registry."""

    mode: Literal["embedded", "external"] = Field(
        default="embedded",
        description="'embedded': the local runtime starts MLflow; 'external': use the server at `uri`.",
    )
    uri: str | None = Field(default=None, description="Tracking URI; required when mode is 'external'.")
    port: int | None = Field(
        default=None, ge=1, le=65535, **scoped("local", "Port for the embedded server; unset picks a free port.")
    )
    backend_store_uri: str | None = Field(
        default=None,
        **scoped("local", "MLflow backend store URI of the embedded server; unset lets the runtime decide."),
    )
    artifacts_destination: str | None = Field(
        default=None, **scoped("local", "Where the embedded MLflow stores artifacts; unset lets the runtime decide.")
    )
    credentials: TrackingCredentialsSpec | None = Field(
        default=None,
        description="Cluster: the MLflow users (HTTP basic auth) of the pods mlplane renders, from Secrets; the "
        "mlplane chart fills it when `mlflow.auth.enabled`. Unset: the pods send no credentials (MLflow without "
        "auth). Locally the supervisor passes its own platform's user.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.TRACKING


class SecretKeyRef(SpecModel):
    """A key of a Kubernetes Secret; the local runtime reads the same value from an environment variable."""

    name: DnsLabel = Field(description="Secret name.")
    key: str = Field(min_length=1, description="Key in the Secret.")


# Store settings whose values are credentials: they must come from a Secret, never inline.
_CREDENTIAL_WORDS = ("password", "secret", "token", "connection_string", "credential", "private_key")
# Scalars of any type: a free-form object in JSON Schema and CRDs (which cannot express the union).
StoreOptions = Annotated[dict[str, str | int | float | bool], WithJsonSchema({"type": "object"})]


class _StoreSpec(SpecModel):
    options: StoreOptions = Field(
        default_factory=dict,
        description="Further Feast settings of the store, as in feature_store.yaml (e.g. host, port, database); "
        "never credentials.",
    )
    secrets: dict[str, SecretKeyRef] = Field(
        default_factory=dict,
        description="Feast settings whose values come from a Secret (e.g. connection_string, password): "
        "in the cluster an env var from `secretKeyRef`, locally the env var MLPLANE_FEAST_<STORE>_<SETTING>.",
    )

    @model_validator(mode="after")
    def _no_inline_credentials(self) -> _StoreSpec:
        for key in self.options:
            if key == "type":
                raise ValueError("options: 'type' is set by the `type` field")
            if key in self.secrets:
                raise ValueError(f"options: '{key}' is also in `secrets`; give it once")
            if any(word in key.lower() for word in _CREDENTIAL_WORDS):
                raise ValueError(f"options: '{key}' looks like a credential; put it under `secrets` "
                                 "(a Secret name and key), never inline")
        return self


class OnlineStoreSpec(_StoreSpec):
    """Feast online store."""

    type: Literal["sqlite", "redis", "postgres"] = Field(
        default="sqlite", description="Online store type; 'sqlite' lives under the state dir locally."
    )


class OfflineStoreSpec(_StoreSpec):
    """Feast offline store."""

    type: Literal["file", "bigquery", "snowflake", "redshift"] = Field(
        default="file", description="Offline store type; 'file' reads the parquet sources of the feature views."
    )


class FeatureStoreSpec(SpecModel):
    """Feast feature store."""

    enabled: bool = Field(default=False, description="Run a Feast feature store (`mlplane up` starts `feast serve`).")
    project: str = Field(
        default="mlplane", pattern=r"^[A-Za-z0-9_]+$", description="Feast project name (letters, digits, '_')."
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, **scoped("local", "Port of the local feature server; unset picks a free port.")
    )
    registry: str | None = Field(
        default=None,
        description="Feast registry path or URI (e.g. 's3://bucket/feast/registry.db'); unset: "
        "feast/registry.db in the state dir locally. Required by the cluster render.",
    )
    online_store: OnlineStoreSpec = Field(default_factory=OnlineStoreSpec, description="Online store.")
    offline_store: OfflineStoreSpec = Field(default_factory=OfflineStoreSpec, description="Offline store.")


_COLLECTION_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
COLLECTION_NAME_RULE = ("must be a Milvus collection name: letters, digits and '_', starting with a letter or "
                        "'_', at most 255 characters (e.g. 'mlplane_docs')")


def check_collection_name(value: str) -> str:
    """``value`` if it is a valid Milvus collection name, else a ValueError saying what is allowed."""
    if not re.match(_COLLECTION_NAME, value):
        raise ValueError(COLLECTION_NAME_RULE)
    return value


CollectionName = Annotated[
    str, AfterValidator(check_collection_name),
    # maxLength (the pattern's 255) bounds the API server's cost estimate of the unique-names rule.
    WithJsonSchema({"type": "string", "pattern": _COLLECTION_NAME, "maxLength": 255}),
]

_CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\S+( \S+){4})$"


def _check_cron(value: str) -> str:
    if not re.match(_CRON, value.strip()):
        raise ValueError("must be a cron schedule: five fields 'minute hour day-of-month month day-of-week' "
                         "(e.g. '0 3 * * *') or a macro such as '@daily'")
    return value.strip()


CronSchedule = Annotated[str, AfterValidator(_check_cron), WithJsonSchema({"type": "string", "pattern": _CRON})]


class VectorIndexSpec(SpecModel):
    """How every collection's vectors are indexed and searched (Milvus index parameters).

    The defaults (HNSW, M 16, efConstruction 200, ef 128) measured recall@10 against exact search of
    0.996 on 100k vectors derived from the corpus' MiniLM embeddings, at the latency of ef 64; see
    bench/RESULTS.md (bench/retrieval.py) for the recall/latency trade-off.
    """

    type: Literal["HNSW", "IVF_FLAT", "FLAT"] = Field(
        default="HNSW", description="'HNSW' (graph), 'IVF_FLAT' (clusters) or 'FLAT' (exact, brute force)."
    )
    metric: Literal["COSINE", "IP", "L2"] = Field(
        default="COSINE", description="Similarity metric; embeddings are L2-normalised, so COSINE equals IP."
    )
    m: int = Field(default=16, ge=2, le=2048, description="HNSW: edges per graph node (build).")
    ef_construction: int = Field(default=200, ge=8, description="HNSW: candidate list size while building.")
    ef: int = Field(
        default=128, ge=1, description="HNSW: candidate list size per search (raised to top-k when smaller)."
    )
    nlist: int = Field(default=128, ge=1, le=65536, description="IVF_FLAT: number of clusters (build).")
    nprobe: int = Field(default=16, ge=1, description="IVF_FLAT: clusters searched per query.")

    def build_params(self) -> dict[str, int]:
        """The Milvus `create_index` params of this index type."""
        if self.type == "HNSW":
            return {"M": self.m, "efConstruction": self.ef_construction}
        if self.type == "IVF_FLAT":
            return {"nlist": self.nlist}
        return {}

    def search_params(self, top_k: int) -> dict[str, int]:
        """The Milvus search params for a query of ``top_k`` results."""
        if self.type == "HNSW":
            return {"ef": max(self.ef, top_k)}
        if self.type == "IVF_FLAT":
            return {"nprobe": min(self.nprobe, self.nlist)}
        return {}


class VectorCollectionSpec(SpecModel):
    """A collection fed by the ingestion pipeline (`mlplane ingest`; a Job/CronJob in the cluster)."""

    name: CollectionName = Field(description="Collection name.")
    source: str = Field(
        description="Directory (or file) of .md, .txt and .html documents; relative paths are relative to "
        "the working directory locally, and must be absolute in the cluster (a path in the ingest pod)."
    )
    volume_claim: str | None = Field(
        default=None,
        description="Cluster: PersistentVolumeClaim mounted read-only at `source` in the ingest pod.",
    )
    chunk_size: int = Field(default=512, ge=32, description="Characters per chunk.")
    chunk_overlap: int = Field(default=64, ge=0, description="Characters shared by adjacent chunks.")
    schedule: CronSchedule | None = Field(
        default=None, description="Cluster: cron schedule of the ingest CronJob; unset renders a one-off Job only."
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.VECTOR_COLLECTION


# The env var that carries the Milvus token into pods and processes (from `vectorStore.tokenSecret`).
VECTOR_STORE_TOKEN_ENV = "MLPLANE_VECTOR_STORE_TOKEN"


class VectorStoreSpec(SpecModel):
    """Milvus vector store."""

    enabled: bool = Field(default=False, **scoped("local", "Run a vector store (`mlplane up` starts Milvus Lite or "
                                                    "connects to `uri`); in the cluster `uri` is what counts."))
    backend: Literal["milvus-lite", "milvus"] = Field(
        default="milvus-lite",
        description="'milvus-lite': the local runtime runs a Milvus Lite server on 127.0.0.1 with its data "
        "under the state dir; 'milvus': a Milvus server at `uri`.",
    )
    uri: str | None = Field(
        default=None,
        description="Milvus URI, e.g. 'http://milvus.mlplane.svc:19530'; required with backend 'milvus'.",
    )
    token_secret: SecretKeyRef | None = Field(
        default=None,
        description="The Milvus token (user:password or an API key), from a Secret: in the cluster the "
        "RayService pods get it as the env var MLPLANE_VECTOR_STORE_TOKEN (`secretKeyRef`), never inline; "
        "unset: Milvus without authentication.",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535,
        **scoped("local", "milvus-lite: port of the local server; unset picks a free port."),
    )
    embedding_model: str | None = Field(
        default=None,
        description="MLflow model URI of the embedder, e.g. 'models:/mlplane-embedder@champion'; unset uses the "
        "packaged all-MiniLM-L6-v2 weights (384 dimensions).",
    )
    index: VectorIndexSpec = Field(default_factory=VectorIndexSpec, description="Index and search parameters.")
    collections: list[VectorCollectionSpec] = Field(
        default_factory=list, max_length=64, description="Collections the ingestion pipeline keeps up to date."
    )

    RULES: ClassVar[tuple[Rule, ...]] = rules.VECTOR_STORE

    def collection(self, name: str) -> VectorCollectionSpec | None:
        """The collection called ``name``, if the spec declares one."""
        return next((c for c in self.collections if c.name == name), None)


class ServingSpec(SpecModel):
    """Defaults for model servers."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        import ipaddress

        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(value)
            return value
        part_re = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
        if (len(value) <= 253 and not re.fullmatch(r"[0-9.]+", value)
                and all(re.fullmatch(part_re, part) for part in value.split("."))):
            return value
        raise ValueError("must be an IPv4 address (e.g. 127.0.0.1) or a host name "
                         "(letters, digits and '-' in dot-separated parts, e.g. localhost)")

    host: str = Field(default="127.0.0.1", **scoped("local", "Address model servers bind to: an IPv4 address or a "
                                                      "host name (e.g. 127.0.0.1, localhost)."))
    grpc: bool = Field(default=True, **scoped("local", "Also serve the gRPC (Open Inference Protocol) endpoint."))
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    grace_period_seconds: int = Field(
        default=30, ge=0, description="Seconds to drain in-flight requests before a server stops."
    )
    default_runtime: Runtime = Field(
        default="kserve", description="Runtime used by deployments that do not name one."
    )
    service_account_name: DnsLabel = Field(
        default="mlplane-model-server",
        description="Cluster: the Kubernetes service account that InferenceServices, RayServices and ingestion "
        "Jobs run under (their cloud identity: IRSA / Workload Identity). The mlplane chart creates it, with "
        "its annotations, in the release namespace and every namespace of its `serving.namespaces`.",
    )


class RateLimitSpec(SpecModel):
    """A token bucket: a steady rate of requests and the burst allowed on top of it."""

    requests_per_second: float = Field(
        default=10.0, gt=0, description="Requests per second a key may make on average, per model server."
    )
    burst: int = Field(default=20, ge=1, description="Requests a key may make at once before the rate applies.")


class AuthSpec(SpecModel):
    """API keys and per-key rate limits on model endpoints (keys: `mlplane keys create|list|revoke`)."""

    enabled: bool = Field(
        default=False,
        description="Require an API key (`Authorization: Bearer KEY` or `x-api-key`) on model endpoints; "
        "health and readiness stay open.",
    )
    rate_limit: RateLimitSpec = Field(
        default_factory=RateLimitSpec,
        description="Default per-key limit; `mlplane keys create --rps --burst` overrides it for one key.",
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

    node_selector: Labels = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="Node labels GPU pods must match.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=_default_tolerations, description="Tolerations added to GPU pods."
    )
    gpu_resource_name: str = Field(default="nvidia.com/gpu", description="Extended resource name for GPUs.")
    gpu_product_label: str = Field(
        default="nvidia.com/gpu.product",
        description="Node label holding the GPU product (set by GPU feature discovery); a deployment's "
        "`resources.gpuType` is rendered as a node selector on it.",
    )
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
    auth: AuthSpec = Field(default_factory=AuthSpec, description="API keys and rate limits; off by default.")


class Platform(SpecModel):
    """The platform: shared services and defaults for every deployment."""

    api_version: Literal["mlplane.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["Platform"] = Field(default="Platform", description="Resource kind.")
    metadata: Metadata = Field(**scoped("resource", "Object metadata."))
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
