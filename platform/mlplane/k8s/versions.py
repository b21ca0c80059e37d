"""The one list of third-party versions the cluster runtime supports. Pure data, no I/O.

`charts/mlplane-stack/Chart.yaml` pins the same chart versions (a test holds the two together and
both against the upstream charts' data in `../shared/upstream-charts`), `mlplane.k8s.helm_plan`
installs them in `PHASES` order, `mlplane.k8s.render` takes its API versions and the Ray version
from here, and docs/kubernetes.md shows the same commands.

One supported version per dependency. The KServe controller (v0.20) and the `kserve` Python package
the model server runs (0.21, see pyproject.toml) are a compatible pair: the model server speaks the
Open Inference Protocol (`protocolVersion: v2`), and every field and annotation mlplane's
InferenceServices and ClusterServingRuntimes use exists in the v0.20 CRDs (tests/stack).
"""

from __future__ import annotations

from dataclasses import dataclass

# Install phases, in order. Each waits until what it installed is ready before the next starts.
PHASE_CERT_MANAGER = "cert-manager"
PHASE_CRDS = "crds"
PHASE_CONTROLLERS = "controllers"
PHASE_MLPLANE = "mlplane"
PHASES = (PHASE_CERT_MANAGER, PHASE_CRDS, PHASE_CONTROLLERS, PHASE_MLPLANE)
PHASE_PURPOSE = {
    PHASE_CERT_MANAGER: "cert-manager and its CRDs (KServe's webhooks take their certificates from it)",
    PHASE_CRDS: "CRD-only charts: KServe's CRDs and mlplane's",
    PHASE_CONTROLLERS: "controllers; charts with a crds/ folder get their CRDs before their own objects",
    PHASE_MLPLANE: "mlplane: the operator, MLflow and the ClusterServingRuntimes (and Milvus, when included)",
}


@dataclass(frozen=True)
class Dependency:
    """One third-party chart of the stack: where it comes from and where it is installed."""

    name: str  # the chart's name, also the release name and the values key in charts/mlplane-stack
    version: str  # the exact chart version
    repository: str  # an https Helm repository, or an oci:// registry path (the chart name is appended)
    namespace: str
    phase: str
    app_version: str  # the version of the software the chart installs
    optional: bool = False  # installed only when asked for (`--include`)

    @property
    def chart_ref(self) -> str:
        """What Helm installs: `oci://…/<name>` for OCI registries, else the chart name in `repository`."""
        return f"{self.repository}/{self.name}" if self.repository.startswith("oci://") else self.name

    @property
    def repo_url(self) -> str | None:
        return None if self.repository.startswith("oci://") else self.repository


CERT_MANAGER_VERSION = "v1.21.1"
KSERVE_VERSION = "v0.20.0"
KUBERAY_VERSION = "1.7.0"
KEDA_VERSION = "2.20.2"
GPU_OPERATOR_VERSION = "v26.7.0"
KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"
MILVUS_CHART_VERSION = "5.0.19"

KSERVE_OCI = "oci://ghcr.io/kserve/charts"

STACK: tuple[Dependency, ...] = (
    Dependency("cert-manager", CERT_MANAGER_VERSION, "https://charts.jetstack.io", "cert-manager",
               PHASE_CERT_MANAGER, CERT_MANAGER_VERSION),
    Dependency("kserve-crd", KSERVE_VERSION, KSERVE_OCI, "kserve", PHASE_CRDS, KSERVE_VERSION),
    # Prometheus operator first: the GPU operator creates the DCGM exporter's ServiceMonitor.
    Dependency("kube-prometheus-stack", KUBE_PROMETHEUS_STACK_VERSION,
               "https://prometheus-community.github.io/helm-charts", "monitoring", PHASE_CONTROLLERS, "v0.93.1"),
    Dependency("gpu-operator", GPU_OPERATOR_VERSION, "https://helm.ngc.nvidia.com/nvidia", "gpu-operator",
               PHASE_CONTROLLERS, GPU_OPERATOR_VERSION),
    Dependency("kuberay-operator", KUBERAY_VERSION, "https://ray-project.github.io/kuberay-helm/", "kuberay",
               PHASE_CONTROLLERS, f"v{KUBERAY_VERSION}"),
    Dependency("keda", KEDA_VERSION, "https://kedacore.github.io/charts", "keda", PHASE_CONTROLLERS, KEDA_VERSION),
    # Namespace `kserve`: kserve-crd's InferenceService CRD takes its CA from kserve/serving-cert.
    Dependency("kserve-resources", KSERVE_VERSION, KSERVE_OCI, "kserve", PHASE_CONTROLLERS, KSERVE_VERSION),
    Dependency("milvus", MILVUS_CHART_VERSION, "https://zilliztech.github.io/milvus-helm/", "milvus",
               PHASE_MLPLANE, "2.6.15", optional=True),
)
STACK_BY_NAME = {d.name: d for d in STACK}

# The Python side of the same components.
KSERVE_PYTHON_MINOR = "0.21"  # the kserve package the model server runs (pyproject.toml)
RAY_VERSION = "2.60.0"  # Ray in the RayService pods; the ray[serve] package mlplane is tested with

# API versions of the custom objects mlplane renders, as served by the pinned controllers' CRDs.
INFERENCE_SERVICE_API = "serving.kserve.io/v1beta1"
SERVING_RUNTIME_API = "serving.kserve.io/v1alpha1"
RAY_SERVICE_API = "ray.io/v1"
SCALED_OBJECT_API = "keda.sh/v1alpha1"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"
