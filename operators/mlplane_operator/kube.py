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
GROUP, VERSION, PLURAL = "mlplane.io", "v1alpha1", "modeldeployments"


@dataclass(frozen=True)
class ChildKind:
    """A kind `mlplane.k8s.render` produces; the operator applies, lists and prunes it."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind("serving.kserve.io/v1beta1", "InferenceService", "inferenceservices"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    ChildKind("ray.io/v1", "RayService", "rayservices"),
)
_BY_TYPE = {(k.api_version, k.kind): k for k in CHILD_KINDS}

# (apiGroup, resource) -> verbs. Children: server-side apply is a PATCH that also creates; list finds
# what to prune; delete prunes and cleans up.
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    (GROUP, PLURAL): frozenset({"list", "watch", "patch"}),  # kopf: watch, finalizer and progress annotations
    (GROUP, f"{PLURAL}/status"): frozenset({"patch"}),  # status.conditions, servedVersion, ...
    (GROUP, f"{PLURAL}/finalizers"): frozenset({"update"}),  # see ADMISSION_ONLY
    ("", "events"): frozenset({"create"}),  # kopf reports warnings and errors as events
    **{(k.group, k.plural): frozenset({"list", "patch", "delete"}) for k in CHILD_KINDS},
}
# Checked by admission, never called: setting `blockOwnerDeletion` in a child's owner reference needs
# `update` on the owner's finalizers (the OwnerReferencesPermissionEnforcement plugin).
ADMISSION_ONLY: frozenset[tuple[str, str, str]] = frozenset({(GROUP, f"{PLURAL}/finalizers", "update")})


def child_kind(obj: Mapping[str, Any]) -> ChildKind:
    """The declared kind of a rendered object; a kind missing from :data:`CHILD_KINDS` is a bug."""
    return _BY_TYPE[(obj["apiVersion"], obj["kind"])]


class Cluster:
    """Server-side apply, list and delete of child objects (the only code that writes children)."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._api = k8s.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls) -> Cluster:
        """In the cluster: the pod's service account; elsewhere: the current kubeconfig context."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:  # $KUBECONFIG as it is now (the library reads it at import)
            k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
        return cls(k8s.ApiClient(configuration))

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply `obj` as the operator's field manager (creates or updates; fixes drift)."""
        kind, meta = child_kind(obj), obj["metadata"]
        result = self._api.patch_namespaced_custom_object(
            kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], obj,
            field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml")
        return cast(Obj, result)

    def list(self, kind: ChildKind, namespace: str, owner: str) -> list[Obj]:
        """Objects of `kind` in `namespace` labelled as `owner`'s; none when the kind is not installed."""
        try:
            found = self._api.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, label_selector=f"mlplane.io/deployment={owner}")
        except ApiException as exc:
            if exc.status == 404:  # the CRD (KEDA, KubeRay, prometheus-operator) is not installed
                return []
            raise
        items: list[Obj] = cast(Obj, found).get("items", [])
        return [{"apiVersion": kind.api_version, "kind": kind.kind, **item} for item in items]

    def delete(self, obj: Mapping[str, Any]) -> None:
        """Delete a child; already gone is fine."""
        kind, meta = child_kind(obj), obj["metadata"]
        try:
            self._api.delete_namespaced_custom_object(kind.group, kind.version, meta["namespace"], kind.plural,
                                                      meta["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
