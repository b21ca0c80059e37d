"""One level-based `reconcile()` for a Platform: validate, apply and prune its children, probe its dependencies.

Create, update and resume handlers and the resync timer call :meth:`PlatformController.reconcile`.
Status: `observedGeneration` and the conditions `Ready`, `TrackingReachable`, `FeatureStoreReady`,
`VectorStoreReachable`, each with a reason. An invalid spec is `Ready=False, reason=InvalidSpec`
naming the field (a `kopf.PermanentError`: nothing is retried until the spec changes); a refused
apply is retried. Dependency outages are conditions, not errors: the timer probes again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mlplane.spec import SpecError
from mlplane_operator import plan, platform_plan, probes
from mlplane_operator.config import OperatorConfig
from mlplane_operator.kube import PLATFORM_CHILD_KINDS, PLATFORM_LABEL, Cluster
from mlplane_operator.plan import Condition

Obj = dict[str, Any]


class PlatformController:
    """Reconciles Platform objects."""

    def __init__(self, config: OperatorConfig, cluster: Cluster, clock: Callable[[], str]) -> None:
        self.config, self.cluster, self._clock = config, cluster, clock
        self._lock = threading.Lock()

    def reconcile(self, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger) -> None:
        meta = body["metadata"]
        current: Obj = dict(body.get("status") or {})
        error: Exception | None = None
        with self._lock:
            try:
                updates = self._converge(body)
            except SpecError as exc:
                updates, error = platform_plan.invalid(str(exc)), kopf.PermanentError(str(exc))
            except ValueError as exc:  # a spec the cluster cannot provision (e.g. milvus-lite ingestion)
                updates, error = platform_plan.invalid(str(exc)), kopf.PermanentError(str(exc))
            except ApiException as exc:
                message = f"the API server refused the Platform's children: {exc.status} {exc.reason}"
                updates = [Condition("Ready", "False", "ApplyFailed", message)]
                error = kopf.TemporaryError(message, delay=self.config.retry_seconds)
        desired = dict(current)
        if not isinstance(error, kopf.TemporaryError):
            desired["observedGeneration"] = meta.get("generation")
        desired["conditions"] = plan.conditions(current.get("conditions") or [], updates,
                                                generation=meta.get("generation"), now=self._clock())
        changes = plan.status_patch(current, desired)
        if changes:
            patch["status"] = changes
        if error is not None:
            logger.warning(str(error))
            before: dict[str, Any] = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), {})
            if (before.get("reason"), before.get("message")) != (updates[0].reason, updates[0].message):
                kopf.warn(body, reason=updates[0].reason, message=updates[0].message)
            raise error

    def _converge(self, body: Mapping[str, Any]) -> list[Condition]:
        platform = platform_plan.parse(body)
        owner = plan.owner_reference(body)
        desired = platform_plan.children(platform, body, owner, self.config.tracking_uri)
        applied = [self.cluster.apply(obj) for obj in desired]
        ns, name = plan.namespace(body), body["metadata"]["name"]
        existing = [o for kind in PLATFORM_CHILD_KINDS for o in self.cluster.list(kind, ns, name, PLATFORM_LABEL)]
        for obj in plan.to_prune(existing, desired, owner["uid"]):
            self.cluster.delete(obj)
        if (body.get("status") or {}).get("observedGeneration") != body["metadata"].get("generation"):
            # The spec changed: settings Secrets it no longer renders go (by name; Secrets are never listed).
            kept = {o["metadata"]["name"] for o in desired if o["kind"] == "Secret"}
            for secret in sorted(platform_plan.feature_store_secrets(platform) - kept):
                self.cluster.delete({"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"namespace": ns, "name": secret}})
        timeout = self.config.probe_timeout_seconds
        spec = platform.spec
        dependencies = [probes.tracking(platform_plan.tracking_uri(platform, self.config.tracking_uri), timeout)]
        if spec.feature_store.enabled:
            store = next((o for o in applied if o.get("kind") == "FeatureStore"), None)
            dependencies.append(platform_plan.feature_store_ready(store))
        else:
            dependencies.append(platform_plan.disabled("FeatureStoreReady", "spec.featureStore"))
        if spec.vector_store.enabled:
            dependencies.append(probes.vector_store(spec.vector_store.uri, timeout))
        else:
            dependencies.append(platform_plan.disabled("VectorStoreReachable", "spec.vectorStore"))
        return [platform_plan.ready(dependencies), *dependencies]
