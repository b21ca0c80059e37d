"""Pure parts of reconciling a Platform: parse, desired children, dependency conditions. No I/O.

A Platform's children are the feast-operator `FeatureStore` (with `spec.featureStore.enabled`) and
the ingestion `CronJob` of each `spec.vectorStore.collections[]` that has a `schedule` (the one-off
`Job` of a collection is `mlplane render --ingest`'s, run when the user wants it). Each child is
labelled `mlplane.io/platform=<name>` and owned by the Platform (garbage-collected with it).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mlplane.features import operator as feast
from mlplane.k8s import resolve
from mlplane.k8s.ingest import render_ingest
from mlplane.spec import Platform, load_dict
from mlplane_operator.kube import PLATFORM_LABEL
from mlplane_operator.plan import Condition, namespace

Obj = dict[str, Any]

CONDITION_TYPES = ("Ready", "TrackingReachable", "FeatureStoreReady", "VectorStoreReachable")
DEFAULT_PLATFORM = "default"
# On a ModelDeployment: the revision of its Platform it was last told about ("<uid>/<generation>" or
# "<uid>/deleted"). Setting it is an update of the deployment, so kopf reconciles it at once. Not under
# "mlplane.io/": kopf leaves its own prefix out of the changes it reacts to.
REVISION_ANNOTATION = "platform.mlplane.io/revision"
NOT_YET = "not-reconciled-yet"


def parse(body: Mapping[str, Any]) -> Platform:
    """The Platform of a Platform object; raises `SpecError` naming the field path."""
    meta = body.get("metadata") or {}
    data = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {key: meta[key] for key in ("name", "namespace", "labels") if key in meta},
            "spec": body.get("spec")}
    platform = load_dict(data, source=f"{meta.get('namespace')}/{meta.get('name')}", document=None)
    assert isinstance(platform, Platform)
    return platform


def tracking_uri(platform: Platform, default: str | None) -> str | None:
    """Where the Platform's MLflow answers: its external `tracking.uri`, else the chart's MLflow (`default`)."""
    tracking = platform.spec.tracking
    if tracking.mode == "external" and tracking.uri:
        return tracking.uri
    return default


def in_cluster(platform: Platform, default_tracking_uri: str | None) -> Platform:
    """`platform` with its tracking resolved to a URI, as the pods in the cluster reach it.

    Render then writes that URI (not `null`) into the RayService's Serve config and the ingest pods.
    """
    return resolve.in_cluster(platform, tracking_uri(platform, default_tracking_uri))  # the rule render uses


def feature_store(platform: Platform, ns: str) -> list[Obj]:
    """The feast-operator `FeatureStore` and its settings Secrets (`mlplane.features.operator`)."""
    return [copy.deepcopy(o) for o in feast.feature_store(platform, ns)]


def feature_store_secrets(platform: Platform) -> set[str]:
    """Every name a settings Secret of the Platform's FeatureStore can have (pruned by name)."""
    return {feast.settings_secret_name(platform, store) for store in ("online", "offline")}


def children(platform: Platform, body: Mapping[str, Any], owner: Obj, default_tracking_uri: str | None) -> list[Obj]:
    """Every child of the Platform object `body`, labelled and owned by it. `ValueError` names the field."""
    ns, name = namespace(body), body["metadata"]["name"]
    resolved = in_cluster(platform.model_copy(update={"metadata": platform.metadata.model_copy(
        update={"namespace": ns})}), default_tracking_uri)
    objects = feature_store(resolved, ns)
    for collection in platform.spec.vector_store.collections:
        if collection.schedule:
            objects += [o for o in render_ingest(resolved, collection.name) if o["kind"] == "CronJob"]
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta.setdefault("labels", {})[PLATFORM_LABEL] = name
        meta["ownerReferences"] = [copy.deepcopy(owner)]
    return objects


def feature_store_ready(obj: Mapping[str, Any] | None) -> Condition:
    """FeatureStoreReady from what the feast-operator reports (`mlplane.features.operator.feature_store_status`)."""
    state = feast.feature_store_status(dict(obj) if obj is not None else None)
    return Condition("FeatureStoreReady", "True" if state.ready else "False", state.reason, state.message)


def disabled(type_: str, what: str) -> Condition:
    return Condition(type_, "True", "Disabled", f"{what} is not enabled in the Platform")


def ready(dependencies: list[Condition]) -> Condition:
    """Ready when every dependency is; else the first one that is not names the reason."""
    failing = [c for c in dependencies if c.status != "True"]
    if not failing:
        return Condition("Ready", "True", "Ready", "every dependency is ready")
    first = failing[0]
    return Condition("Ready", "False", first.reason, f"{first.type}: {first.message}")


def invalid(message: str) -> list[Condition]:
    return [Condition("Ready", "False", "InvalidSpec", message)]


def usable(body: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a ModelDeployment can use the Platform object `body` now, and if not, why.

    Usable once the operator has reconciled its current generation and found its spec valid. A
    dependency outage (MLflow, Milvus) shows on the Platform and does not stop the deployments: they
    report their own MLflow trouble and keep serving.
    """
    assert body is not None
    meta, status = body["metadata"], body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready_ = conditions.get("Ready") or {}
    if ready_.get("reason") == "InvalidSpec":
        return False, f"Platform {meta['name']} is invalid: {ready_.get('message')}"
    if status.get("observedGeneration") != meta.get("generation"):
        return False, f"Platform {meta['name']} has not been reconciled yet (generation {meta.get('generation')})"
    return True, ""


# --------------------------------------------------------------------------- Platform changes → deployments
def platform_name(deployment: Mapping[str, Any]) -> str:
    """The Platform name a ModelDeployment object uses: `spec.platform`, else 'default'."""
    return str((deployment.get("spec") or {}).get("platform") or DEFAULT_PLATFORM)


def deployment_entry(deployment: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(namespace, name, Platform revision it last saw) of a ModelDeployment object.

    A deployment never reconciled yet has its first reconcile under way, which reads the Platform
    anyway: NOT_YET, which no Platform event notifies (no second reconcile racing the first).
    """
    meta = deployment["metadata"]
    if (deployment.get("status") or {}).get("observedGeneration") is None:
        return namespace(deployment), meta["name"], NOT_YET
    return namespace(deployment), meta["name"], (meta.get("annotations") or {}).get(REVISION_ANNOTATION)


def revision(body: Mapping[str, Any], event_type: str | None) -> str | None:
    """The revision of a Platform its deployments must have seen; None while it is not reconciled yet.

    A Platform is settled once its status has caught up with its spec (`observedGeneration`), valid or
    not: a deployment reads it then and gets what `usable` says. Gone is a revision too (only once it
    is gone: while its finalizer holds it, a deployment still finds it).
    """
    meta = body["metadata"]
    if event_type == "DELETED":
        return f"{meta.get('uid')}/deleted"
    observed = (body.get("status") or {}).get("observedGeneration")
    if observed is None or observed != meta.get("generation"):
        return None
    return f"{meta.get('uid')}/{observed}"


def to_notify(platform_namespace: str, revision_: str, operator_namespace: str,
              deployments: Iterable[tuple[str, str, str | None]],
              namespaces_with_platform: Collection[str]) -> list[tuple[str, str]]:
    """(namespace, name) of the deployments (entries of one Platform name) that must see `revision_`.

    A deployment uses the Platform of that name in its own namespace, else the one in the operator's
    namespace: a Platform in the operator's namespace concerns the deployments of namespaces with no
    Platform of that name. Deployments that saw this revision already are left alone (idempotent).
    """
    out = set()
    for ns, name, seen in deployments:
        if seen in (revision_, NOT_YET):
            continue
        if ns == platform_namespace or (platform_namespace == operator_namespace
                                        and ns not in namespaces_with_platform):
            out.add((ns, name))
    return sorted(out)
