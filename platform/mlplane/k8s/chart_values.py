"""The mlplane chart's values as pydantic models: `python -m mlplane.k8s.chart_values [--check]`.

Writes `charts/mlplane/values.schema.json`, which Helm checks every install, upgrade, lint and
template against: a misspelt key or a wrong type fails with the value's path before anything is
rendered. Our own keys are closed (`additionalProperties: false`); Kubernetes-shaped values
(resources, tolerations, env, NetworkPolicy peers) stay open objects, the API server checks them.
The defaults here are the chart's `values.yaml` (a test keeps the two equal).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from mlplane import images
from mlplane._generated import REPO_ROOT, generator_main
from mlplane.spec.platform import PlatformSpec

COMMAND = "python -m mlplane.k8s.chart_values"
SCHEMA_PATH = REPO_ROOT / "charts" / "mlplane" / "values.schema.json"

Obj = dict[str, Any]
Port = Annotated[int, Field(ge=1, le=65535)]
Size = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")]
NonEmpty = Annotated[str, Field(min_length=1)]
Cidr = Annotated[str, Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]
PullPolicy = Literal["Always", "IfNotPresent", "Never"]
# An image reference must name a tag or a digest: an untagged one means whatever `:latest` is that day.
ImageRef = Annotated[str, Field(pattern=images.TAGGED_REFERENCE, description=(
    "Image reference with a tag or digest (repository:tag or repository@sha256:...)."))]
Repository = Annotated[str, Field(min_length=1, pattern=images.REPOSITORY)]
ImageTag = Annotated[str, Field(pattern=images.TAG_PATTERN)]
K8sName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class Values(BaseModel):
    """Base of every values section: camelCase keys, unknown keys rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _resources(requests: Obj, limits: Obj) -> Any:
    return Field(default_factory=lambda: {"requests": dict(requests), "limits": dict(limits)},
                 description="Container resources (a Kubernetes ResourceRequirements).")


def _env() -> Any:
    return Field(default_factory=list, description="Extra environment variables (list of EnvVar).")


def _node_selector() -> Any:
    return Field(default_factory=dict, description="Node labels the pods must have.")


def _tolerations() -> Any:
    return Field(default_factory=list, description="Tolerations (list of Toleration).")


def _annotations(what: str) -> Any:
    return Field(default_factory=dict, description=f"Annotations of {what}, e.g. eks.amazonaws.com/role-arn.")


class Image(Values):
    repository: Repository = Field(description="Image repository, without a tag (that goes in `tag`).")
    tag: ImageTag = Field(default="", description="Image tag; empty means the chart's appVersion.")
    pull_policy: PullPolicy = Field(default="IfNotPresent", description="Image pull policy.")


class ServiceAccount(Values):
    annotations: dict[str, str] = _annotations("the service account")


# --------------------------------------------------------------------------- operator
class Operator(Values):
    image: Image = Field(default_factory=lambda: Image(repository=images.OPERATOR_REPOSITORY),
                         description="Operator image.")
    replicas: int = Field(default=1, ge=0, le=1,
                          description="0 or 1: kopf runs standalone, so never two operators at once.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="kopf log level.")
    resources: Obj = _resources({"cpu": "100m", "memory": "256Mi"}, {"memory": "512Mi"})
    node_selector: dict[str, str] = _node_selector()
    tolerations: list[Obj] = _tolerations()
    extra_env: list[Obj] = _env()
    resync_seconds: float = Field(default=60, gt=0, description=(
        "Every deployment is reconciled again this often: MLflow alias moves and drift are noticed within it."))
    retry_seconds: float = Field(default=30, gt=0, description=(
        "First delay before retrying when MLflow or the API server failed (doubles up to 8x)."))
    prometheus_url: str = Field(default="", description=(
        "Prometheus that KEDA's triggers query; empty: kube-prometheus-stack's in namespace monitoring."))


# --------------------------------------------------------------------------- MLflow
class Persistence(Values):
    size: Size = Field(description="PersistentVolumeClaim size.")
    storage_class: str = Field(default="", description="StorageClass; empty uses the cluster's default.")


class BackendStore(Values):
    type: Literal["sqlite", "postgresql"] = Field(
        default="sqlite", description="`sqlite` (on a PVC, single replica, for trials) or `postgresql` (external).")
    host: str = Field(default="", description="PostgreSQL host (type: postgresql).")
    port: Port = Field(default=5432, description="PostgreSQL port.")
    database: str = Field(default="mlflow", description="PostgreSQL database.")
    username: str = Field(default="mlflow", description="PostgreSQL user.")
    password: str = Field(default="", description=(
        "Database password; the chart writes it into the Secret `<fullname>-mlflow-db` (key `password`). "
        "Prefer `existingSecret` outside trials (values files end up in Helm's release history)."))
    existing_secret: str = Field(default="", description=(
        "Secret with the database password (key `existingSecretPasswordKey`); empty means "
        "`<fullname>-mlflow-db`, created from `password` when that is set, else expected to exist "
        "(e.g. synced from `passwordSecretArn`)."))
    existing_secret_password_key: NonEmpty = Field(default="password", description="Key of the password.")
    password_secret_arn: str = Field(
        default="", description="AWS Secrets Manager ARN of the password (recorded as an annotation only).")
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="require", description="libpq sslmode.")
    persistence: Persistence = Field(default_factory=lambda: Persistence(size="5Gi"),
                                     description="PVC of the sqlite database (type: sqlite).")


class ArtifactStore(Values):
    type: Literal["s3", "gcs", "pvc"] = Field(
        default="pvc", description="`s3`, `gcs` (read directly by clients and model servers) or `pvc` (proxied).")
    bucket: str = Field(default="", description="Bucket (s3, gcs).")
    region: str = Field(default="", description="AWS region of the bucket (s3).")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    persistence: Persistence = Field(default_factory=lambda: Persistence(size="20Gi"),
                                     description="PVC of the artifacts (type: pvc).")


Password = Annotated[str, Field(pattern=r"^(.{12,})?$")]  # empty, or MLflow's minimum of 12 characters
Username = Annotated[str, Field(pattern=r"^[^:\s]+$")]  # HTTP basic auth: no ':' in a user name


class MlflowAuth(Values):
    enabled: bool = Field(default=False, description=(
        "MLflow behind HTTP basic auth (`mlflow server --app-name mlplane-auth`): every call but /health needs a "
        "user. The operator uses the admin, ingestion Jobs the writer; KServe's storage initializer and RayService "
        "pods read as the reader. The release Platform's spec.tracking.credentials names the Secrets "
        "`<fullname>-mlflow-reader` and `<fullname>-mlflow-writer` (keys `username`, `password`), which the chart "
        "creates in every serving namespace; the admin's password stays in the release namespace."))
    admin_username: Username = Field(default="mlplane-admin", description=(
        "Admin user (reads and writes everything, deletes included)."))
    admin_password: Password = Field(default="", description=(
        "Admin password (12 characters or more), written into the Secret `<fullname>-mlflow-auth`; prefer "
        "`existingSecret` outside trials."))
    writer_username: Username = Field(default="mlplane-writer", description=(
        "Writer user (ingestion Jobs, training jobs): reads, logs runs, artifacts and models, registers model "
        "versions and sets aliases; never deletes, renames or administers."))
    writer_password: Password = Field(default="", description=(
        "Writer password (12 characters or more); required with `enabled` unless `existingSecret`."))
    reader_username: Username = Field(default="mlplane-reader", description="Read-only user (GET and HEAD only).")
    reader_password: Password = Field(default="", description=(
        "Reader password (12 characters or more); required with `enabled` unless `existingSecret`."))
    existing_secret: str = Field(default="", description=(
        "Secret with keys `admin-username`, `admin-password` (optionally `writer-username`, `writer-password`, "
        "`reader-username`, `reader-password`); then create in every serving namespace the Secrets "
        "`<fullname>-mlflow-reader` and `<fullname>-mlflow-writer` (keys `username`, `password`: the reader and "
        "the writer) and, with `artifactStore.type: pvc`, "
        "`<fullname>-mlflow-storage` (keys `https-host`, `headers`)."))


class Mlflow(Values):
    image: Image = Field(default_factory=lambda: Image(repository=images.MLFLOW_REPOSITORY), description=(
        "MLflow image; mlplane's has MLflow of uv.lock with its PostgreSQL, S3 and GCS clients."))
    replicas: int = Field(default=1, ge=0, description="Replicas; more than 1 needs backendStore.type postgresql.")
    port: Port = Field(default=5000, description="Port of the tracking server (container and Service).")
    workers: int = Field(default=2, ge=1, description="gunicorn workers.")
    allowed_hosts: list[NonEmpty] = Field(default_factory=list, description=(
        "More Host headers MLflow answers (its DNS-rebinding check), e.g. the ingress host `mlflow.example.com`; "
        "wildcards like `*.example.com` work. The Service's names, localhost and private IPs are always allowed."))
    cors_allowed_origins: list[NonEmpty] = Field(default_factory=list, description=(
        "More origins whose browsers may change state through the API (MLflow's CORS check), e.g. "
        "`http://mlflow.example.com`; `https://<host>` of every `allowedHosts` entry is always allowed."))
    backend_store: BackendStore = Field(default_factory=BackendStore, description="Run and registry metadata.")
    artifact_store: ArtifactStore = Field(default_factory=ArtifactStore, description="Model files and artifacts.")
    auth: MlflowAuth = Field(default_factory=MlflowAuth, description="Authentication.")
    service_account: ServiceAccount = Field(default_factory=ServiceAccount, description="MLflow's service account.")
    resources: Obj = _resources({"cpu": "250m", "memory": "512Mi"}, {"memory": "2Gi"})
    node_selector: dict[str, str] = _node_selector()
    tolerations: list[Obj] = _tolerations()
    extra_env: list[Obj] = _env()


# --------------------------------------------------------------------------- serving
class Toggle(Values):
    enabled: bool = Field(default=True, description="Install it.")


class ServingImage(Values):
    image: ImageRef = Field(description="Image with a tag or digest (repository:tag).")
    resources: Obj = Field(description="Container resources (a Kubernetes ResourceRequirements).")


class TritonServing(ServingImage):
    shm_size: Size = Field(default="1Gi", description=(
        "Size of the memory-backed emptyDir at /dev/shm: Triton's Python backend passes every request's and "
        "response's tensors through shared memory there, and a pod's own /dev/shm is 64 MiB. It counts against "
        "the container's memory limit; make it a few times `serving.maxRequestBytes` × the requests in flight."))


class ServingServiceAccount(ServiceAccount):
    name: str = Field(default="", pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$", description=(
        "Its name; empty means the release Platform's `platform.serving.serviceAccountName` (default "
        "`mlplane-model-server`), the account its model servers run under; a different name is refused."))


class Serving(Values):
    runtimes: Toggle = Field(default_factory=Toggle,
                             description="The cluster-scoped ClusterServingRuntimes (install from one release).")
    mlflow: ServingImage = Field(default_factory=lambda: ServingImage(
        image=images.SERVING,
        resources={"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}),
        description="mlplane's KServe Python ModelServer (`mlplane-mlflow`).")
    triton: TritonServing = Field(default_factory=lambda: TritonServing(
        image=images.TRITON,
        resources={"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}),
        description="NVIDIA Triton with mlplane's Python backend (`mlplane-triton`).")
    service_account: ServingServiceAccount = Field(default_factory=ServingServiceAccount, description=(
        "The model servers' service account (InferenceServices, RayServices, ingestion Jobs run under it)."))
    namespaces: list[K8sName] = Field(default_factory=list, description=(
        "Namespaces (besides the release's) where mlplane deploys models: the chart creates the model servers' "
        "service account in each (the namespaces must exist). Terraform's IRSA role trusts the same list."))


# --------------------------------------------------------------------------- network policies
class DnsPeers(Values):
    namespace_selector: dict[str, str] = Field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "kube-system"},
        description="matchLabels of the namespace running cluster DNS.")
    pod_selector: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"},
                                         description="matchLabels of the DNS pods.")


class ApiServer(Values):
    cidrs: list[Cidr] = Field(default_factory=list, description=(
        "CIDRs of the API server endpoints (`kubectl get endpoints kubernetes`); empty allows any "
        "destination on `ports`."))
    ports: list[Port] = Field(default_factory=lambda: [443, 6443], min_length=1, description="API server ports.")


class NetworkPolicy(Values):
    enabled: bool = Field(default=True, description=(
        "Default-deny ingress for the chart's pods plus the allows below (needs a CNI that enforces "
        "NetworkPolicy)."))
    model_server_namespace_selector: dict[str, str] = Field(default_factory=dict, description=(
        "matchLabels of the namespaces whose model servers (pods with label mlplane.io/deployment) and "
        "ingestion Jobs (label mlplane.io/collection) may call MLflow; empty means every namespace."))
    ingress_namespace_selector: dict[str, str] = Field(default_factory=dict, description=(
        "matchLabels of the ingress controller's namespace, allowed to reach MLflow; empty allows none."))
    mlflow_extra_from: list[Obj] = Field(default_factory=list, description=(
        "More NetworkPolicyPeers allowed to reach MLflow (e.g. training jobs, notebooks)."))
    dns: DnsPeers = Field(default_factory=DnsPeers, description="Where the operator may resolve names.")
    api_server: ApiServer = Field(default_factory=ApiServer, description="Where the operator reaches the API server.")
    operator_extra_egress: list[Obj] = Field(default_factory=list, description=(
        "More NetworkPolicyEgressRules for the operator."))


# --------------------------------------------------------------------------- the chart
class ClusterAutoscaler(Values):
    service_account: ServiceAccount = Field(default_factory=ServiceAccount,
                                            description="Written by Terraform for the cluster-autoscaler chart.")


class Tests(Values):
    image: ImageRef = Field(default="curlimages/curl:8.10.1", description="Image of the `helm test` pod.")


class ChartValues(Values):
    """Every value the mlplane chart accepts."""

    enabled: bool = Field(default=True, description=(
        "The dependency condition of umbrella charts (mlplane-stack); ignored by this chart."))
    name_override: str = Field(default="", description="Override the chart-name part of resource names.")
    fullname_override: str = Field(default="", description="Override the full resource-name prefix.")
    image_pull_secrets: list[Obj] = Field(default_factory=list, description="Pull secrets for every pod.")
    operator: Operator = Field(default_factory=Operator, description="The mlplane operator (kopf).")
    mlflow: Mlflow = Field(default_factory=Mlflow, description="The MLflow tracking server and model registry.")
    serving: Serving = Field(default_factory=Serving, description="KServe serving runtimes for the model servers.")
    platform: Obj = Field(default_factory=dict, description=(
        "The spec of the Platform the chart installs as `Platform/default` in the release namespace (the schema "
        "is the Platform model's: `mlplane.spec.platform.PlatformSpec`)."))

    @field_validator("platform")
    @classmethod
    def _platform_spec(cls, value: Obj) -> Obj:
        PlatformSpec.model_validate(value)  # the same model as the Platform CRD and `mlplane up -f`
        return value
    network_policy: NetworkPolicy = Field(default_factory=NetworkPolicy, description="NetworkPolicies.")
    cluster_autoscaler: ClusterAutoscaler = Field(default_factory=ClusterAutoscaler,
                                                  description="Terraform's autoscaler settings (ignored).")
    tests: Tests = Field(default_factory=Tests, description="The `helm test` pod.")
    extra_objects: list[Obj | str] = Field(default_factory=list, description=(
        "Extra manifests to render; strings go through `tpl`."))
    global_: Obj = Field(default_factory=dict, alias="global", description="Helm's values shared with subcharts.")


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve `$ref`s into their definitions; drop titles and defaults (values.yaml holds those)."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {**target, **{k: _inline(v, defs) for k, v in node.items() if k != "$ref"}}
    out = {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs", "default", "properties")}
    if "properties" in node:
        out["properties"] = {name: _inline(sub, defs) for name, sub in node["properties"].items()}
    return out


def schema() -> dict[str, Any]:
    """The chart's values.schema.json (JSON Schema draft 7, every reference inlined)."""
    raw = ChartValues.model_json_schema(by_alias=True)
    out = _inline(raw, raw.get("$defs", {}))
    # `platform:` is a Platform spec: the same model as `mlplane up -f` and the Platform CRD, not a copy.
    platform = PlatformSpec.model_json_schema(by_alias=True)
    out["properties"]["platform"] = {**_inline(platform, platform.get("$defs", {})),
                                     "description": out["properties"]["platform"]["description"]}
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "mlplane chart values", **out}


def defaults() -> dict[str, Any]:
    """The chart's default values, as values.yaml holds them."""
    return ChartValues().model_dump(mode="json", by_alias=True)


def render() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def generate(path: Path = SCHEMA_PATH) -> dict[Path, str]:
    return {path: render()}


def main(argv: list[str] | None = None) -> int:
    return generator_main(COMMAND, __doc__.splitlines()[0], generate, argv)


if __name__ == "__main__":
    sys.exit(main())
