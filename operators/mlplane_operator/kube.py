"""The Kubernetes API as the operator uses it: the child kinds, the permissions, and a thin client.

Every API call the operator (and kopf on its behalf) makes is declared in :data:`PERMISSIONS`; the
chart's ClusterRole (`charts/mlplane/templates/operator-rbac.yaml`) grants exactly these, and the
operator tests check both against the calls they observe.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]

FIELD_MANAGER = "mlplane-operator"
GROUP, VERSION = "mlplane.io", "v1alpha1"
PLURAL = "modeldeployments"
PLATFORMS = "platforms"
# The label every child carries, naming its owner (a ModelDeployment or a Platform), for list and prune.
DEPLOYMENT_LABEL = "mlplane.io/deployment"
PLATFORM_LABEL = "mlplane.io/platform"


@dataclass(frozen=True)
class ChildKind:
    """A kind the operator applies, lists and prunes (custom and core-group kinds alike)."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str, name: str | None = None) -> str:
        """The REST path: `/api/v1/...` for the core group, `/apis/GROUP/VERSION/...` for the others."""
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" + (f"/{name}" if name else "")


# What `mlplane.k8s.render` produces for a ModelDeployment.
CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind("v1", "ConfigMap", "configmaps"),
    ChildKind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    ChildKind("ray.io/v1", "RayService", "rayservices"),
)
# What a Platform provisions: the feast-operator's FeatureStore and the scheduled ingestion CronJobs.
PLATFORM_CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind("feast.dev/v1", "FeatureStore", "featurestores"),
    ChildKind("batch/v1", "CronJob", "cronjobs"),
)
# The feast-operator reads a store's settings from a Secret: applied, and pruned by its known name
# (never listed: the operator gets no read access to Secrets).
SECRET = ChildKind("v1", "Secret", "secrets")
_BY_TYPE = {(k.api_version, k.kind): k for k in (*CHILD_KINDS, *PLATFORM_CHILD_KINDS, SECRET)}

# (apiGroup, resource) -> verbs. Children: server-side apply is a PATCH that also creates; list finds
# what to prune; delete prunes and cleans up.
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    # kopf: watch, finalizer and progress annotations; the operator: the status as it is now (get), a
    # Platform's change announced to the deployments using it (patch of an annotation).
    (GROUP, PLURAL): frozenset({"get", "list", "watch", "patch"}),
    (GROUP, f"{PLURAL}/status"): frozenset({"patch"}),  # status.conditions, servedVersion, ...
    (GROUP, f"{PLURAL}/finalizers"): frozenset({"update"}),  # see ADMISSION_ONLY
    # kopf watches Platforms and patches their annotations; a ModelDeployment reads its Platform (get).
    (GROUP, PLATFORMS): frozenset({"get", "list", "watch", "patch"}),
    (GROUP, f"{PLATFORMS}/status"): frozenset({"patch"}),
    (GROUP, f"{PLATFORMS}/finalizers"): frozenset({"update"}),  # see ADMISSION_ONLY
    ("", "events"): frozenset({"create"}),  # kopf reports warnings and errors as events
    # Before applying, a ModelDeployment checks that its model servers' account exists (one get by name).
    ("", "serviceaccounts"): frozenset({"get"}),
    **{(k.group, k.plural): frozenset({"list", "patch", "delete"}) for k in (*CHILD_KINDS, *PLATFORM_CHILD_KINDS)},
    (SECRET.group, SECRET.plural): frozenset({"patch", "delete"}),  # write-only: see SECRET
}
# Checked by admission, never called: setting `blockOwnerDeletion` in a child's owner reference needs
# `update` on the owner's finalizers (the OwnerReferencesPermissionEnforcement plugin).
ADMISSION_ONLY: frozenset[tuple[str, str, str]] = frozenset(
    {(GROUP, f"{PLURAL}/finalizers", "update"), (GROUP, f"{PLATFORMS}/finalizers", "update")})


def child_kind(obj: Mapping[str, Any]) -> ChildKind:
    """The declared kind of a rendered object; a kind missing from the kind lists is a bug."""
    return _BY_TYPE[(obj["apiVersion"], obj["kind"])]


class Cluster:
    """Server-side apply, list and delete of child objects (the only code that writes children).

    Core-group and custom kinds go through the same generic REST calls (`ApiClient.call_api`), so a
    ConfigMap is applied, listed and pruned exactly like an InferenceService.
    """

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._client = api_client
        self._custom = k8s.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls) -> Cluster:
        """In the cluster: the pod's service account; elsewhere: the current kubeconfig context."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:  # $KUBECONFIG as it is now (the library reads it at import)
            k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        return cls(k8s.ApiClient(configuration))

    def _call(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json") -> Obj:
        request = self._client.param_serialize(
            method=method, resource_path=path, query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type}, body=body,
            auth_settings=["BearerToken"])
        result = self._client._call_with_legacy_options(request, {"200": "object", "201": "object"}, None, True,
                                                        None, True)
        return cast(Obj, result or {})

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply `obj` as the operator's field manager (creates or updates; fixes drift)."""
        kind, meta = child_kind(obj), obj["metadata"]
        return self._call("PATCH", kind.path(meta["namespace"], meta["name"]), body=obj,
                          query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                          content_type="application/apply-patch+yaml")

    def list(self, kind: ChildKind, namespace: str, owner: str, label: str = DEPLOYMENT_LABEL) -> list[Obj]:
        """Objects of `kind` in `namespace` labelled as `owner`'s; none when the kind is not installed."""
        try:
            found = self._call("GET", kind.path(namespace), query=[("labelSelector", f"{label}={owner}")])
        except ApiException as exc:
            if exc.status == 404:  # the CRD (KEDA, KubeRay, prometheus-operator, feast) is not installed
                return []
            raise
        items: list[Obj] = found.get("items") or []
        return [{"apiVersion": kind.api_version, "kind": kind.kind, **item} for item in items]

    def delete(self, obj: Mapping[str, Any]) -> None:
        """Delete a child (background propagation: what it owns goes too); already gone is fine."""
        kind, meta = child_kind(obj), obj["metadata"]
        try:
            self._call("DELETE", kind.path(meta["namespace"], meta["name"]),
                       body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def service_account_exists(self, namespace: str, name: str) -> bool:
        """Whether the ServiceAccount `namespace/name` exists (a get by name: no list of the namespace's)."""
        try:
            self._call("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def get_deployment(self, namespace: str, name: str) -> Obj | None:
        """The ModelDeployment object `namespace/name`, or None when there is none."""
        try:
            found = self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(Obj, found)

    def patch_deployment_status(self, namespace: str, name: str, changes: Mapping[str, Any]) -> None:
        """Merge-patch the status of a ModelDeployment (its status subresource)."""
        self._call("PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
                   body={"status": dict(changes)}, content_type="application/merge-patch+json")

    def annotate_deployment(self, namespace: str, name: str, key: str, value: str) -> None:
        """Set one annotation on a ModelDeployment (a merge patch); a deployment already gone is fine."""
        try:
            self._call("PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
                       body={"metadata": {"annotations": {key: value}}},
                       content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def get_platform(self, namespace: str, name: str) -> Obj | None:
        """The Platform object `namespace/name`, or None when there is none."""
        try:
            found = self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLATFORMS, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(Obj, found)
