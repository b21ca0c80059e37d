"""Pure parts of reconciling a ModelDeployment: parse, desired children, pruning, status. No I/O."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlplane.k8s.render import DEFAULT_NAMESPACE, ResolvedArtifact, render
from mlplane.spec import ModelDeployment, Platform, load_dict

Obj = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]

CONDITION_TYPES = ("Ready", "ModelResolved", "Progressing", "Degraded")
SERVED_BY_TAG = "mlplane.io/served-by"


def parse(body: Mapping[str, Any]) -> ModelDeployment:
    """The spec of a ModelDeployment object; raises `SpecError` naming the field path.

    Server-set metadata (uid, resourceVersion, kopf's annotations, ...) is not part of the spec.
    """
    meta = body.get("metadata") or {}
    data = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {key: meta[key] for key in ("name", "namespace", "labels") if key in meta},
        "spec": body.get("spec"),
    }
    deployment = load_dict(data, source=f"{meta.get('namespace')}/{meta.get('name')}", document=None)
    assert isinstance(deployment, ModelDeployment)
    return deployment


def owner_reference(body: Mapping[str, Any]) -> Obj:
    """The owner reference every child carries: controller, and blocks the owner's foreground deletion."""
    meta = body["metadata"]
    return {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def children(deployment: ModelDeployment, platform: Platform, resolved: ResolvedArtifact, owner: Obj, *,
             prometheus_url: str, gpu_headroom: int | None = None) -> list[Obj]:
    """The rendered objects, each owned by the ModelDeployment, in apply order.

    `gpu_headroom` unset: the Platform's `spec.gpuNodePool.gpuHeadroom`.
    """
    objects = render(deployment, platform, resolved, gpu_headroom=gpu_headroom, prometheus_url=prometheus_url)
    for obj in objects:
        obj["metadata"]["ownerReferences"] = [copy.deepcopy(owner)]
    return objects


def key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def to_prune(existing: Iterable[Obj], desired: Iterable[Obj], uid: str) -> list[Obj]:
    """Children of `uid` that the spec no longer renders (runtime changed, autoscaling removed, ...)."""
    keep = {key(obj) for obj in desired}
    return [obj for obj in existing if owned_by(obj, uid) and key(obj) not in keep]


def main_child(objects: Iterable[Obj]) -> Obj:
    """The object that serves: the InferenceService or the RayService."""
    return next(o for o in objects if o["kind"] in ("InferenceService", "RayService"))


def serving_url(obj: Mapping[str, Any]) -> str:
    """Where the endpoint answers: the URL KServe reports, else the in-cluster Service's address."""
    reported = (obj.get("status") or {}).get("url")
    if reported:
        return str(reported)
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    if obj["kind"] == "RayService":
        return f"http://{name}-serve-svc.{namespace}.svc.cluster.local:8000"
    return f"http://{name}-predictor.{namespace}.svc.cluster.local"


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether KServe (condition Ready) or KubeRay (condition Ready or serviceStatus Running) says so."""
    status = obj.get("status") or {}
    if status.get("serviceStatus") == "Running":
        return True
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def served_by_tag(namespace: str, name: str) -> str:
    """The MLflow model-version tag saying that deployment `namespace/name` serves the version.

    One key per deployment (the value is its `spec.model`), so several deployments can serve one version.
    """
    return f"{SERVED_BY_TAG}/{namespace}/{name}"


def namespace(body: Mapping[str, Any]) -> str:
    return str(body["metadata"].get("namespace") or DEFAULT_NAMESPACE)


# --------------------------------------------------------------------------- status
@dataclass(frozen=True)
class Condition:
    type: str
    status: ConditionStatus
    reason: str
    message: str


def conditions(previous: Iterable[Mapping[str, Any]], updates: Iterable[Condition], *, generation: int | None,
               now: str) -> list[Obj]:
    """`previous` with `updates` applied; lastTransitionTime moves only when a status changes."""
    merged = {c["type"]: dict(c) for c in previous if c.get("type")}
    for update in updates:
        before = merged.get(update.type)
        kept = now if before is None or before.get("status") != update.status else before.get("lastTransitionTime", now)
        merged[update.type] = {
            "type": update.type, "status": update.status, "reason": update.reason, "message": update.message,
            "lastTransitionTime": kept,
            "observedGeneration": generation,
        }
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(merged.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


def new_problem(previous: Iterable[Mapping[str, Any]], now: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Degraded condition when it newly reports a problem (status, reason or message changed)."""
    before = next((c for c in previous if c.get("type") == "Degraded"), {})
    after = next((c for c in now if c.get("type") == "Degraded"), None)
    if after is None or after.get("status") != "True":
        return None
    same = all(before.get(k) == after.get(k) for k in ("status", "reason", "message"))
    return None if same else after


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> Obj:
    """A JSON merge patch turning `current` status into `desired` (None removes); empty when equal."""
    out: Obj = {k: v for k, v in desired.items() if current.get(k) != v}
    out.update({k: None for k in current if k not in desired})
    return out
