"""Render a `ModelDeployment` into the Kubernetes objects that serve it. Pure: no I/O, no API calls.

`render(deployment, platform, resolved)` returns plain dicts ready for server-side apply:

- `runtime: kserve | triton` — a KServe `InferenceService` (RawDeployment), a `PodDisruptionBudget`,
  a `ServiceMonitor` and, with `spec.autoscaling`, a KEDA `ScaledObject` on the predictor Deployment;
- `runtime: ray` — a KubeRay `RayService` (a head without GPUs, worker groups sized by the Serve
  application's actors, in-tree autoscaling: `mlplane.k8s.ray_cluster`).

Before anything is rendered, the spec's cross-field rules (`mlplane.spec.rules`) are checked again with the
effective runtime (a deployment naming none gets the Platform's default).

Resolving `spec.model` to a registry version and artifact location is I/O (MLflow); the caller does it
and passes a `ResolvedArtifact`. Owner references are the operator's to add.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from mlplane import images
from mlplane.features.k8s import configmap_name, pod_features
from mlplane.k8s import ray_cluster, versions
from mlplane.k8s.mlflow_credentials import mlflow_env
from mlplane.rag.serve_config import IMPORT_PATH as RAG_IMPORT_PATH
from mlplane.rag.serve_config import serve_app_config
from mlplane.spec.deployment import AutoscalingSpec, ModelDeployment, ResourcesSpec, ScaleTarget
from mlplane.spec.effective import effective_runtime  # re-exported: mlplane.k8s.effective_runtime
from mlplane.spec.platform import VECTOR_STORE_TOKEN_ENV, Platform
from mlplane.spec.rules import check_effective

Obj = dict[str, Any]

DEFAULT_NAMESPACE = "default"
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_RAY_IMPORT_PATH = RAG_IMPORT_PATH
RAY_VERSION = versions.RAY_VERSION  # one list of supported versions: mlplane.k8s.versions
# mlplane-ray: rayproject/ray:<RAY_VERSION>-py311 plus the mlplane wheel (images/mlplane-ray.Containerfile).
DEFAULT_RAY_IMAGE = images.RAY

# Used when `spec.autoscaling.target` is unset.
DEFAULT_SCALE_TARGET = ScaleTarget(metric="concurrency", value=10)
# Metrics that exist only while a pod runs on a GPU: they cannot wake a deployment scaled to zero.
GPU_METRICS = frozenset({"gpu-utilization"})
# Scale-down never removes more than this many pods per period, whatever the recommendation.
SCALE_DOWN_POLICY = {"type": "Pods", "value": 1, "periodSeconds": 60}
SCALE_UP_POLICIES = [{"type": "Percent", "value": 100, "periodSeconds": 15},
                     {"type": "Pods", "value": 4, "periodSeconds": 15}]

NOTE_ANNOTATION = "mlplane.io/autoscaling-note"


@dataclass(frozen=True)
class ResolvedArtifact:
    """What `spec.model` resolved to in the registry: the version and where its files are."""

    registry_version: str
    # What KServe's storage initializer downloads (mlplane.k8s.resolve computes it): the version's s3:// or
    # gs:// location, or the http(s) URL of its archive behind MLflow's artifact proxy; Triton's repository.
    storage_uri: str


@dataclass(frozen=True)
class _KServeFlavour:
    """How one KServe-backed runtime is served and observed."""

    model_format: str
    serving_runtime: str  # a ClusterServingRuntime shipped by the mlplane chart
    metrics_port: int
    # metric → PromQL over the predictor's pods (`{sel}` is the label selector), summed over pods.
    request_queries: dict[str, str]
    protocol_version: str = "v2"  # one of the ServingRuntime's protocolVersions: what clients speak
    # Fields of the predictor's model container from the Platform (KServe appends `args` to the runtime's).
    container: Callable[[Platform], Obj] | None = None


def _triton_container(platform: Platform) -> Obj:
    """What the chart's `mlplane-triton` runtime (`python -m mlplane.triton.server`) takes from the
    Platform, as the local runtime gives it (`mlplane.runtime.local.plan.triton_process`): the drain time
    (Triton waits this long for requests in flight after SIGTERM) and `serving.maxRequestBytes`, which
    mlplane's Python backend enforces (docs/triton-limits.md)."""
    serving = platform.spec.serving
    return {"args": [f"--exit-timeout-secs={serving.grace_period_seconds}"],
            "env": [{"name": "MLPLANE_MAX_REQUEST_BYTES", "value": str(serving.max_request_bytes)}]}


def _kserve_container(platform: Platform) -> Obj:
    """What the chart's `mlplane-mlflow` runtime (`python -m mlplane.serving`) takes from the Platform, as the
    local runtime gives it (`mlplane.runtime.local.plan.kserve_process`): the request size limit (checked on
    the body, and on shape x datatype before any tensor is allocated) and the drain time after SIGTERM."""
    serving = platform.spec.serving
    return {"args": [f"--max-request-bytes={serving.max_request_bytes}",
                     f"--grace-period={serving.grace_period_seconds}"]}


_KSERVE_FLAVOURS: dict[str, _KServeFlavour] = {
    # KServe's Python ModelServer (MLflow pyfunc): histograms per predict call on the HTTP port.
    "kserve": _KServeFlavour(
        model_format="mlflow",
        serving_runtime="mlplane-mlflow",
        metrics_port=8080,
        request_queries={
            "rps": "sum(rate(request_predict_seconds_count{sel}[1m]))",
            # Little's law: the rate of summed latency is the mean number of requests in flight.
            "concurrency": "sum(rate(request_predict_seconds_sum{sel}[1m]))",
            # The ModelServer exports no queue gauge; in-flight requests are the closest measure.
            "queue-depth": "sum(rate(request_predict_seconds_sum{sel}[1m]))",
        },
        container=_kserve_container,
    ),
    # NVIDIA Triton: its own metrics endpoint on 8002. Clients infer over gRPC only: the Service's port is
    # Triton's gRPC port and its HTTP inference API is closed (charts/mlplane serving-runtimes.yaml).
    "triton": _KServeFlavour(
        model_format="triton",
        serving_runtime="mlplane-triton",
        metrics_port=8002,
        request_queries={
            "rps": "sum(rate(nv_inference_request_success{sel}[1m]))",
            "concurrency": "sum(rate(nv_inference_request_duration_us{sel}[1m])) / 1e6",
            "queue-depth": "sum(nv_inference_pending_request_count{sel})",
        },
        protocol_version="grpc-v2",
        container=_triton_container,
    ),
}


# --------------------------------------------------------------------------- small helpers
def namespace_of(deployment: ModelDeployment) -> str:
    return deployment.metadata.namespace or DEFAULT_NAMESPACE


def predictor_name(deployment: ModelDeployment) -> str:
    """The Deployment (and Service) KServe creates for the predictor in RawDeployment mode."""
    return f"{deployment.metadata.name}-predictor"


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9_.-], starting and ending alphanumeric."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return value.strip("-_.")


def labels(deployment: ModelDeployment, resolved: ResolvedArtifact) -> dict[str, str]:
    """Labels on every rendered object: the deployment's own, then mlplane's (which win)."""
    name = deployment.metadata.name
    return {
        **deployment.metadata.labels,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "mlplane",
        "app.kubernetes.io/managed-by": "mlplane",
        "mlplane.io/deployment": name,
        "mlplane.io/model-version": label_value(resolved.registry_version),
    }


def selector_labels(deployment: ModelDeployment, component: str) -> dict[str, str]:
    """Labels that pick one component's pods (stable across model versions)."""
    return {"mlplane.io/deployment": deployment.metadata.name, "app.kubernetes.io/component": component}


def _metadata(deployment: ModelDeployment, resolved: ResolvedArtifact, name: str,
              annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace_of(deployment), "labels": labels(deployment, resolved)}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _resources(deployment: ModelDeployment, platform: Platform) -> Obj:
    """cpu/memory requests and limits; GPUs as a limit on the platform's GPU resource name."""
    spec = deployment.spec.resources
    out: Obj = {}
    for section in ("requests", "limits"):
        given = getattr(spec, section)
        values = {k: v for k, v in (given.model_dump(exclude_none=True) if given else {}).items()}
        if section == "limits" and spec.gpus:
            values[platform.spec.gpu_node_pool.gpu_resource_name] = str(spec.gpus)
        if values:
            out[section] = values
    return out


def _gpu_placement(deployment: ModelDeployment, platform: Platform) -> Obj:
    """nodeSelector and tolerations for GPU pods; nothing for CPU-only ones."""
    return gpu_placement(deployment.spec.resources, platform)


def gpu_placement(resources: ResourcesSpec, platform: Platform) -> Obj:
    """nodeSelector and tolerations for pods of `resources`: the GPU pool's, plus the GPU product
    (`resources.gpuType` on the pool's `gpuProductLabel`, set by GPU feature discovery); {} without GPUs."""
    if not resources.gpus:
        return {}
    pool = platform.spec.gpu_node_pool
    out: Obj = {}
    selector = dict(pool.node_selector)
    if resources.gpu_type:
        selector[pool.gpu_product_label] = resources.gpu_type
    if selector:
        out["nodeSelector"] = selector
    if pool.tolerations:
        out["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    return out


def rollout_strategy(gpus_per_replica: int, gpu_headroom: int, *, min_replicas: int = 2,
                     allow_outage: bool = False) -> Obj:
    """RollingUpdate settings that fit the GPUs available.

    A surge pod needs `gpus_per_replica` spare GPUs. With them (or CPU only: 25%) new pods start before
    old ones stop. Without them, a deployment of 2 or more replicas replaces one pod at a time (the others
    keep serving). A single-replica one (`min_replicas` ≤ 1) has two choices, and the spec picks
    (`spec.rollout.allowOutage`): surge anyway — the new pod waits Pending for a GPU to free up while
    the old one serves (default) — or stop the old pod first, an outage until the new one is ready.
    """
    if gpus_per_replica == 0:
        rolling: Obj = {"maxSurge": "25%", "maxUnavailable": 0}
    elif gpu_headroom >= gpus_per_replica or (min_replicas <= 1 and not allow_outage):
        rolling = {"maxSurge": 1, "maxUnavailable": 0}
    else:
        rolling = {"maxSurge": 0, "maxUnavailable": 1}
    return {"type": "RollingUpdate", "rollingUpdate": rolling}


def _allow_outage(deployment: ModelDeployment) -> bool:
    return deployment.spec.rollout is not None and deployment.spec.rollout.allow_outage


def _number(value: float) -> str:
    return format(value, "g")


# --------------------------------------------------------------------------- autoscaling
@dataclass(frozen=True)
class ReplicaBounds:
    """Replica bounds after mlplane's rules, and why they differ from the spec (if they do)."""

    min_replicas: int
    max_replicas: int
    note: str | None = None


def replica_bounds(deployment: ModelDeployment) -> ReplicaBounds:
    """Bounds from `spec.autoscaling` (or `spec.replicas`); scale to zero is refused for GPU metrics."""
    spec = deployment.spec
    scaling = spec.autoscaling
    if scaling is None:
        return ReplicaBounds(spec.replicas, max(spec.replicas, 1))
    target = scaling.target or DEFAULT_SCALE_TARGET
    if scaling.min_replicas == 0 and target.metric in GPU_METRICS:
        return ReplicaBounds(1, max(scaling.max_replicas, 1), note=(
            f"minReplicas 0 raised to 1: {target.metric} is only reported by running GPU pods, so it "
            "cannot scale a deployment up from zero; scale on concurrency, rps or queue-depth to allow zero"))
    return ReplicaBounds(scaling.min_replicas, scaling.max_replicas)


def scale_down_window(deployment: ModelDeployment, scaling: AutoscalingSpec,
                      measured_cold_start_seconds: float | None = None) -> int:
    """Seconds of low load before scaling down: at least a cold start, so a new pod is not wasted.

    The cold start is `spec.coldStartSeconds`, else `measured_cold_start_seconds` (what the local
    runtime measured from start to ready), else unknown: then the configured window applies as is.
    """
    window = scaling.scale_down.stabilization_window_seconds
    cold_start = deployment.spec.cold_start_seconds
    if cold_start is None:
        cold_start = measured_cold_start_seconds
    if cold_start is not None:
        window = max(window, math.ceil(cold_start))
    return window


def prometheus_trigger(deployment: ModelDeployment, flavour: _KServeFlavour, target: ScaleTarget,
                       prometheus_url: str) -> Obj:
    """A KEDA prometheus trigger for the target metric over the predictor's pods."""
    sel = f'{{namespace="{namespace_of(deployment)}",pod=~"{predictor_name(deployment)}-.*"}}'
    if target.metric == "gpu-utilization":
        # Already a per-pod average (percent): compare as is, not divided by the replica count.
        # `pod`/`namespace` are the workload's only because the stack scrapes the DCGM exporter with
        # `honorLabels: true` (charts/mlplane-stack); otherwise Prometheus stores them as exported_pod.
        query = f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{sel}[2m]))"
        metric_type = "Value"
    else:
        # Summed over pods: KEDA's AverageValue divides by replicas, so `value` is per replica.
        query = flavour.request_queries[target.metric].replace("{sel}", sel)
        metric_type = "AverageValue"
    return {
        "type": "prometheus",
        "name": target.metric,
        "metricType": metric_type,
        "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": _number(target.value)},
    }


def scaled_object(deployment: ModelDeployment, resolved: ResolvedArtifact, flavour: _KServeFlavour, *,
                  prometheus_url: str, measured_cold_start_seconds: float | None = None) -> Obj:
    """A KEDA ScaledObject that scales the predictor Deployment on the spec's target metric."""
    scaling = deployment.spec.autoscaling
    assert scaling is not None
    bounds = replica_bounds(deployment)
    target = scaling.target or DEFAULT_SCALE_TARGET
    down = scale_down_window(deployment, scaling, measured_cold_start_seconds)
    spec: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": predictor_name(deployment)},
        "minReplicaCount": bounds.min_replicas,
        "maxReplicaCount": bounds.max_replicas,
        "pollingInterval": 15,
    }
    if bounds.min_replicas == 0:  # the 1 → 0 step is KEDA's, not the HPA's: give it the same patience
        spec["cooldownPeriod"] = max(down, 30)
    spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": {
        "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up.stabilization_window_seconds,
                    "selectPolicy": "Max", "policies": [dict(p) for p in SCALE_UP_POLICIES]},
        "scaleDown": {"stabilizationWindowSeconds": down, "selectPolicy": "Min",
                      "policies": [dict(SCALE_DOWN_POLICY)]},
    }}}
    spec["triggers"] = [prometheus_trigger(deployment, flavour, target, prometheus_url)]
    annotations = {NOTE_ANNOTATION: bounds.note} if bounds.note else None
    return {"apiVersion": versions.SCALED_OBJECT_API, "kind": "ScaledObject",
            "metadata": _metadata(deployment, resolved, deployment.metadata.name, annotations), "spec": spec}


# --------------------------------------------------------------------------- kserve / triton
def inference_service(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact,
                      flavour: _KServeFlavour, *, gpu_headroom: int) -> Obj:
    """A KServe v1beta1 InferenceService in RawDeployment mode."""
    bounds = replica_bounds(deployment)
    annotations = {"serving.kserve.io/deploymentMode": "RawDeployment", "mlplane.io/model": deployment.spec.model}
    if deployment.spec.autoscaling is not None:
        # KEDA owns the replica count: KServe must neither create an HPA nor reset replicas.
        annotations["serving.kserve.io/autoscalerClass"] = "external"
    if bounds.note:
        annotations[NOTE_ANNOTATION] = bounds.note
    model: Obj = {
        "modelFormat": {"name": flavour.model_format},
        "protocolVersion": flavour.protocol_version,
        "runtime": flavour.serving_runtime,
        "storageUri": resolved.storage_uri,
    }
    if flavour.container is not None:
        model.update(flavour.container(platform))
    resources = _resources(deployment, platform)
    if resources:
        model["resources"] = resources
    predictor: Obj = {
        "labels": {**labels(deployment, resolved), **selector_labels(deployment, "predictor")},
        "minReplicas": bounds.min_replicas,
        "maxReplicas": bounds.max_replicas,
        # The same drain time as the local runtime gives a model server before it stops it.
        "terminationGracePeriodSeconds": platform.spec.serving.grace_period_seconds,
        "deploymentStrategy": rollout_strategy(deployment.spec.resources.gpus, gpu_headroom,
                                               min_replicas=bounds.min_replicas,
                                               allow_outage=_allow_outage(deployment)),
        **_gpu_placement(deployment, platform),
        # The model servers' cloud identity (IRSA / Workload Identity); the chart creates the account.
        "serviceAccountName": platform.spec.serving.service_account_name,
        "model": model,
    }
    if deployment.spec.features is not None:  # the model server reads online features (mlplane.features.k8s)
        if flavour.model_format != "mlflow":
            raise ValueError(f"{deployment.metadata.name}: spec.features is served by runtime 'kserve' only")
        pod = pod_features(deployment, platform)
        model.update(env=pod.env, volumeMounts=pod.volume_mounts)
        predictor["volumes"] = pod.volumes
    rollout = deployment.spec.rollout
    if rollout is not None and rollout.canary_traffic_percent is not None:
        # KServe splits traffic between the previous and the newest revision only in Serverless mode.
        annotations["serving.kserve.io/deploymentMode"] = "Serverless"
        predictor["canaryTrafficPercent"] = rollout.canary_traffic_percent
    return {"apiVersion": versions.INFERENCE_SERVICE_API, "kind": "InferenceService",
            "metadata": _metadata(deployment, resolved, deployment.metadata.name, annotations),
            "spec": {"predictor": predictor}}


def feature_store_config_map(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact) -> Obj:
    """The cluster feature_store.yaml the predictor mounts (credentials only as ${ENV} references)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _metadata(deployment, resolved, configmap_name(deployment)),
            "data": pod_features(deployment, platform).config_data}


def pod_disruption_budget(deployment: ModelDeployment, resolved: ResolvedArtifact) -> Obj:
    """Voluntary evictions (node drains, cluster upgrades) take at most one predictor pod at a time, and
    never the last ready one of a deployment that may run a single replica (`minAvailable: 1`: a drain
    waits until a replacement is ready elsewhere) — unless the spec opted into outages
    (`spec.rollout.allowOutage`) or into scaling to zero."""
    bounds = replica_bounds(deployment)
    budget: Obj = {"maxUnavailable": 1}
    if bounds.min_replicas == 1 and not _allow_outage(deployment):
        budget = {"minAvailable": 1}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _metadata(deployment, resolved, predictor_name(deployment)),
            "spec": {**budget, "selector": {"matchLabels": selector_labels(deployment, "predictor")}}}


def service_monitor(deployment: ModelDeployment, resolved: ResolvedArtifact, flavour: _KServeFlavour) -> Obj:
    """A Prometheus-operator ServiceMonitor scraping the predictor's metrics port.

    It selects the Service KServe creates for the predictor and scrapes the pods' `targetPort`, so the
    port need only be declared on the container (Triton's 8002 is not on the Service).
    """
    return {
        "apiVersion": versions.SERVICE_MONITOR_API, "kind": "ServiceMonitor",
        "metadata": _metadata(deployment, resolved, predictor_name(deployment)),
        "spec": {
            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": deployment.metadata.name}},
            "namespaceSelector": {"matchNames": [namespace_of(deployment)]},
            "endpoints": [{"targetPort": flavour.metrics_port, "path": "/metrics", "interval": "15s"}],
        },
    }


def _render_kserve(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact,
                   runtime: str, opts: _Options) -> list[Obj]:
    flavour = _KSERVE_FLAVOURS[runtime]
    objects = [inference_service(deployment, platform, resolved, flavour, gpu_headroom=opts.gpu_headroom),
               pod_disruption_budget(deployment, resolved)]
    if deployment.spec.features is not None:
        objects.insert(0, feature_store_config_map(deployment, platform, resolved))
    if deployment.spec.autoscaling is not None:
        objects.append(scaled_object(deployment, resolved, flavour, prometheus_url=opts.prometheus_url,
                                     measured_cold_start_seconds=opts.measured_cold_start_seconds))
    objects.append(service_monitor(deployment, resolved, flavour))
    return objects


# --------------------------------------------------------------------------- ray
def serve_config(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact,
                 import_path: str) -> str:
    """Ray Serve's `serveConfigV2`: the deployment's application, the same one the local runtime runs
    (`mlplane.rag.serve_config.serve_app_config`), with `spec.model` pinned to the resolved artifact.

    The application reaches MLflow through `MLFLOW_TRACKING_URI` in the pods unless the platform's
    tracking is external, and Milvus at the platform's `spec.vectorStore.uri`.
    """
    tracking = platform.spec.tracking
    app = serve_app_config(
        deployment, platform, import_path=import_path,
        tracking_uri=tracking.uri if tracking.mode == "external" else None,
        vector_store_uri=platform.spec.vector_store.uri,
        generator_uri=resolved.storage_uri, generator_version=resolved.registry_version,
    )
    return yaml.safe_dump({"applications": [app]}, sort_keys=False)


def ray_service(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact, *,
                import_path: str = DEFAULT_RAY_IMPORT_PATH, image: str = DEFAULT_RAY_IMAGE) -> Obj:
    """A KubeRay v1 RayService: a head without Serve replicas or GPUs, and worker groups sized by the
    application's actors (a CPU group for the Ingress, Retriever and Embedder, a Generator group with
    the GPUs; see `mlplane.k8s.ray_cluster`), autoscaled in-tree up to the Serve replicas' maximum."""
    bounds = replica_bounds(deployment)
    pod_labels = {**labels(deployment, resolved)}
    serve = serve_config(deployment, platform, resolved, import_path)
    (app,) = yaml.safe_load(serve)["applications"]
    head = ray_cluster.head_group(image, {**pod_labels, **selector_labels(deployment, "ray-head")})
    workers = ray_cluster.worker_group_specs(
        deployment, platform, app, image=image, gpu_image=images.gpu_variant(image),
        pod_labels={**pod_labels, **selector_labels(deployment, "ray-worker")},
        placement=lambda resources: gpu_placement(resources, platform))
    for group in (head, *workers):  # the model servers' cloud identity; the chart creates the account
        group["template"]["spec"]["serviceAccountName"] = platform.spec.serving.service_account_name
    # The account turns token automount off; KubeRay's autoscaler sidecar in the head calls the API server
    # (KubeRay binds its Role to the head's service account).
    head["template"]["spec"]["automountServiceAccountToken"] = True
    annotations = {"mlplane.io/model": deployment.spec.model}
    if bounds.note:
        annotations[NOTE_ANNOTATION] = bounds.note
    return {
        "apiVersion": versions.RAY_SERVICE_API, "kind": "RayService",
        "metadata": _metadata(deployment, resolved, deployment.metadata.name, annotations),
        "spec": {
            "serveConfigV2": serve,
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": head,
                "workerGroupSpecs": workers,
            },
        },
    }


def vector_store_env(platform: Platform) -> list[Obj]:
    """Env vars of the RAG pods from the Platform's Secrets: the Milvus token as a `secretKeyRef`, never inline."""
    ref = platform.spec.vector_store.token_secret
    if ref is None:
        return []
    return [{"name": VECTOR_STORE_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _render_ray(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact,
                runtime: str, opts: _Options) -> list[Obj]:
    obj = ray_service(deployment, platform, resolved, import_path=opts.ray_import_path, image=opts.ray_image)
    # The application only reads MLflow (pins aliases, downloads model files): the reader.
    env = [*vector_store_env(platform), *mlflow_env(platform, "reader")]
    if env:  # every Ray container: Serve places the Retriever and the model replicas on any node
        cluster = obj["spec"]["rayClusterConfig"]
        for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"]):
            for container in group["template"]["spec"]["containers"]:
                container["env"] = [*container.get("env", []), *env]
    return [obj]


# --------------------------------------------------------------------------- entry point
@dataclass(frozen=True)
class _Options:
    gpu_headroom: int
    prometheus_url: str
    ray_import_path: str
    ray_image: str
    measured_cold_start_seconds: float | None = None


_RENDERERS: dict[str, Callable[[ModelDeployment, Platform, ResolvedArtifact, str, _Options], list[Obj]]] = {
    "kserve": _render_kserve,
    "triton": _render_kserve,
    "ray": _render_ray,
}


def service_account_problem(platform: Platform, namespace: str, service_accounts: Iterable[str]) -> str | None:
    """Why model servers of `platform` cannot run in `namespace`, given the ServiceAccount names there; None if
    they can. Pure: the caller lists the accounts (the operator, before applying; its status condition)."""
    name = platform.spec.serving.service_account_name
    if name in set(service_accounts):
        return None
    return (f"spec.serving.serviceAccountName: service account {name!r} does not exist in namespace {namespace!r}; "
            f"add {namespace!r} to the mlplane chart's serving.namespaces (it creates the account there, and "
            f"Terraform's model_server_namespaces lets it assume the model-server role), or name an existing account")


def render(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact, *,
           gpu_headroom: int | None = None, prometheus_url: str = DEFAULT_PROMETHEUS_URL,
           ray_import_path: str = DEFAULT_RAY_IMPORT_PATH, ray_image: str = DEFAULT_RAY_IMAGE,
           measured_cold_start_seconds: float | None = None) -> list[Obj]:
    """The Kubernetes objects serving `deployment` on `platform`, in apply order.

    `gpu_headroom` is the number of GPUs free for a surge pod during a rolling update (0: replace pods
    one at a time); unset, the platform's `spec.gpuNodePool.gpuHeadroom` applies.
    `prometheus_url` is where KEDA queries metrics; `ray_import_path` is the Ray Serve application
    (`module:attribute`) a `runtime: ray` deployment runs. `measured_cold_start_seconds` is the cold
    start the local runtime measured; it stands in for an unset `spec.coldStartSeconds` in the KEDA
    scale-down window.
    """
    if gpu_headroom is None:
        gpu_headroom = platform.spec.gpu_node_pool.gpu_headroom
    if gpu_headroom < 0:
        raise ValueError(f"gpu_headroom must be 0 or more, got {gpu_headroom}")
    runtime = effective_runtime(deployment, platform)
    refused = check_effective(deployment.spec, runtime)  # the spec's rules, now that the runtime is known
    if refused:
        raise ValueError(f"{deployment.metadata.name}: spec: " + "; ".join(refused))
    if measured_cold_start_seconds is not None and measured_cold_start_seconds < 0:
        raise ValueError(f"measured_cold_start_seconds must be 0 or more, got {measured_cold_start_seconds}")
    opts = _Options(gpu_headroom, prometheus_url, ray_import_path, ray_image, measured_cold_start_seconds)
    return _RENDERERS[runtime](deployment, platform, resolved, runtime, opts)
