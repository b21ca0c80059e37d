"""One level-based `reconcile()` for a ModelDeployment: validate, resolve, render, apply, prune, report.

Every kopf handler (create, update, resume and the resync timer) calls :meth:`Controller.reconcile`;
it computes the desired children from the spec and what MLflow says now, so a missed event or a
moved alias is corrected on the next call. Outcomes are written to `status` (conditions Ready,
ModelResolved, Progressing, Degraded); errors are raised as kopf's Permanent (invalid spec: no
retries) or Temporary (MLflow or the API server failed: retried with a growing delay, children
left as they are).
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from mlplane.k8s.render import DEFAULT_NAMESPACE, ResolvedArtifact, service_account_problem
from mlplane.k8s.resolve import resolve_served
from mlplane.registry import ArtifactStoreError, RegistryError, RegistryUnavailable, UnfetchableArtifact
from mlplane.spec import ModelDeployment, Platform, SpecError, parse_model_ref
from mlplane.triton.repository import TritonRepoError
from mlplane_operator import plan, platform_plan
from mlplane_operator.config import OperatorConfig
from mlplane_operator.kube import CHILD_KINDS, Cluster
from mlplane_operator.mlflow_registry import ModelRegistry
from mlplane_operator.plan import Condition

Obj = dict[str, Any]


def _utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Outcome(Exception):
    """Ends one reconcile early: the condition updates to write and the kopf error to raise."""

    def __init__(self, updates: list[Condition], error: Exception) -> None:
        super().__init__(str(error))
        self.updates, self.error = updates, error


class Controller:
    """Reconciles ModelDeployments; holds the operator's clients and one lock per object.

    One MLflow client per tracking URI: a deployment resolves its model in its Platform's MLflow (an
    external `spec.tracking.uri`, else the operator's MLFLOW_TRACKING_URI, the chart's MLflow).
    """

    def __init__(self, config: OperatorConfig, cluster: Cluster, clock: Callable[[], str] = _utcnow) -> None:
        self.config, self.cluster, self._clock = config, cluster, clock
        self._locks: dict[str, threading.Lock] = {}
        self._registries: dict[str, ModelRegistry] = {}
        self._guard = threading.Lock()

    def registry(self, tracking_uri: str | None) -> ModelRegistry | None:
        """The MLflow client for `tracking_uri` (made once, with the operator's timeout); None without a URI."""
        if not tracking_uri:
            return None
        with self._guard:
            if tracking_uri not in self._registries:
                self._registries[tracking_uri] = ModelRegistry(tracking_uri, self.config.registry_timeout_seconds)
            return self._registries[tracking_uri]

    def registry_for(self, platform: Platform) -> ModelRegistry | None:
        """The MLflow client of a Platform as the cluster sees it (`platform_plan.in_cluster`)."""
        return self.registry(platform_plan.tracking_uri(platform, self.config.tracking_uri))

    def _lock(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    # ------------------------------------------------------------------ reconcile
    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry + 1`: `retry_seconds`, doubling, at most 8 times as long."""
        return float(self.config.retry_seconds * 2 ** min(retry, 3))

    def reconcile(self, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, retry: int = 0) -> None:
        """Bring the children and `status` of one ModelDeployment in line with its spec.

        `retry` is kopf's count of failed attempts so far; temporary errors wait `backoff(retry)`.
        """
        meta = body["metadata"]
        with self._lock(meta["uid"]):
            # The status as the API server has it now, read and written under the object's lock: kopf
            # runs the resync timer next to the change handlers and may hand over a body older than the
            # status written a moment ago; a patch computed from that would rewrite every condition.
            current: Obj = dict(self._fresh_status(body))
            desired = dict(current)
            error: Exception | None = None
            try:
                updates = self._converge(body, desired)
                desired["observedGeneration"] = meta.get("generation")
            except _Outcome as outcome:
                updates, error = outcome.updates, outcome.error
                if isinstance(error, kopf.PermanentError):  # acted upon: nothing more to do for this generation
                    desired["observedGeneration"] = meta.get("generation")
            desired["conditions"] = plan.conditions(current.get("conditions") or [], updates,
                                                    generation=meta.get("generation"), now=self._clock())
            changes = plan.status_patch(current, {k: v for k, v in desired.items() if v is not None})
            if changes:
                self._write_status(body, changes, patch)
            if error is not None:
                if isinstance(error, kopf.TemporaryError):
                    error = kopf.TemporaryError(str(error), delay=self.backoff(retry))
                logger.warning(str(error))
                problem = plan.new_problem(current.get("conditions") or [], desired["conditions"])
                if problem is not None:  # an event per new problem, not per retry
                    kopf.warn(body, reason=problem["reason"], message=problem["message"])
                raise error

    def _write_status(self, body: Mapping[str, Any], changes: Obj, patch: kopf.Patch) -> None:
        try:
            self.cluster.patch_deployment_status(plan.namespace(body), body["metadata"]["name"], changes)
        except ApiException as exc:
            if exc.status != 404:  # gone: nothing to write; else kopf writes it after the handler
                patch["status"] = changes

    def _fresh_status(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = body["metadata"]
        try:
            found = self.cluster.get_deployment(plan.namespace(body), meta["name"])
        except ApiException:
            found = None  # the body's status will do; the next reconcile reads again
        if found is None or found["metadata"].get("uid") != meta.get("uid"):
            return body.get("status") or {}
        return found.get("status") or {}

    def _converge(self, body: Mapping[str, Any], status: Obj) -> list[Condition]:
        try:
            deployment = plan.parse(body)
        except SpecError as exc:
            raise _Outcome(_invalid(str(exc)), kopf.PermanentError(str(exc))) from None
        platform = self._platform(deployment, status)
        self._check_service_account(deployment, platform, status)
        registry = self.registry_for(platform)
        version, storage_uri = self._resolve(deployment, status, platform, registry)
        owner = plan.owner_reference(body)
        try:
            desired = plan.children(deployment, platform, ResolvedArtifact(version, storage_uri), owner,
                                    prometheus_url=self.config.prometheus_url)
        except ValueError as exc:  # a spec this cluster cannot render (e.g. features without a feature store)
            raise _Outcome(_invalid(str(exc)), kopf.PermanentError(str(exc))) from None
        try:
            applied = [self.cluster.apply(obj) for obj in desired]
            existing = [o for kind in CHILD_KINDS
                        for o in self.cluster.list(kind, plan.namespace(body), deployment.metadata.name)]
            for obj in plan.to_prune(existing, desired, owner["uid"]):
                self.cluster.delete(obj)
        except ApiException as exc:
            message = f"the API server refused the children: {exc.status} {exc.reason}: {_api_message(exc)}"
            raise _Outcome([Condition("Degraded", "True", "ApplyFailed", message)],
                           kopf.TemporaryError(message)) from None
        ref = deployment.model_ref
        if ref.kind != "uri" and registry is not None and status.get("servedVersion") != version:
            try:
                registry.mark_served(ref.name, version, plan.served_by_tag(plan.namespace(body),
                                     deployment.metadata.name), deployment.spec.model)
            except RegistryError as exc:  # the children are applied; only the served-by tag is behind
                message = _unavailable(registry, exc, version)
                raise _Outcome([Condition("Degraded", "True", "RegistryUnavailable", message)],
                               kopf.TemporaryError(message)) from None
        main = plan.main_child(applied)
        ready = plan.is_ready(main)
        status.update(servedVersion=version or None, modelUri=storage_uri, url=plan.serving_url(main))
        what = f"{main['kind']} {main['metadata']['name']}"
        served = f"version {version}" if version else storage_uri
        return [
            Condition("Ready", "True" if ready else "False", "Ready" if ready else "Progressing",
                      f"{what} serves {served}" if ready else f"waiting for {what} to become ready"),
            Condition("ModelResolved", "True", "Resolved", f"{deployment.spec.model} is {served}"),
            Condition("Progressing", "False" if ready else "True", "RolledOut" if ready else "Rolling",
                      f"{what} serves {served}" if ready else f"{what} is rolling out {served}"),
            Condition("Degraded", "False", "AsExpected", "children applied"),
        ]

    def _resolve(self, deployment: ModelDeployment, status: Mapping[str, Any], platform: Platform,
                 registry: ModelRegistry | None) -> tuple[str, str]:
        """(registry version, storageUri) to serve; raises `_Outcome` when MLflow cannot say.

        The same `mlplane.k8s.resolve.resolve_served` as `mlplane render`, against the Platform's MLflow
        (`registry`); the operator also stores the serving archive (proxied artifact store, runtime
        triton) the storageUri names.
        """
        ref = deployment.model_ref
        if ref.kind != "uri" and registry is None:
            message = (f"{deployment.spec.model} needs MLflow: Platform {platform.metadata.name} has embedded "
                       "tracking and the operator has no MLFLOW_TRACKING_URI; set spec.tracking.mode: external "
                       "with spec.tracking.uri in the Platform, or install the chart's MLflow")
            raise _Outcome(_unresolved("NoRegistry", message), kopf.TemporaryError(message))
        kept = f" (children keep serving version {status['servedVersion']})" if status.get("servedVersion") else ""
        try:
            served = resolve_served(deployment, platform, registry, write=True).artifact
            return served.registry_version, served.storage_uri
        except UnfetchableArtifact as exc:  # no registry state fixes it: the spec or the artifact store must change
            message = str(exc)
            raise _Outcome(_invalid(message), kopf.PermanentError(message)) from None
        except ArtifactStoreError as exc:
            message = f"{exc}{kept}"
            raise _Outcome(_unresolved(exc.reason, message), kopf.TemporaryError(message)) from None
        except RegistryUnavailable as exc:
            assert registry is not None
            message = _unavailable(registry, exc, status.get("servedVersion"))
            raise _Outcome(_unresolved("RegistryUnavailable", message),
                           kopf.TemporaryError(message)) from None
        except RegistryError as exc:
            message = f"{exc}{kept}"
            updates = _unresolved("ModelNotFound", message)
            if not status.get("servedVersion"):
                updates.append(Condition("Ready", "False", "ModelNotFound", message))
            raise _Outcome(updates, kopf.TemporaryError(message)) from None
        except TritonRepoError as exc:
            message = str(exc)
            raise _Outcome([Condition("Ready", "False", "UnservableModel", message),
                            Condition("ModelResolved", "False", "UnservableModel", message),
                            Condition("Progressing", "False", "UnservableModel", message),
                            Condition("Degraded", "True", "UnservableModel", message)],
                           kopf.PermanentError(message)) from None

    def _platform(self, deployment: ModelDeployment, status: Mapping[str, Any]) -> Platform:
        """The deployment's Platform (`spec.platform`, else 'default'): in its namespace, else the operator's.

        Missing, invalid or not yet reconciled: `Ready=False` (PlatformNotFound, PlatformNotReady), the
        children untouched, retried; the resync timer picks up a Platform that appears or changes.
        """
        name = deployment.spec.platform or platform_plan.DEFAULT_PLATFORM
        namespaces = dict.fromkeys([deployment.metadata.namespace or plan.DEFAULT_NAMESPACE, self.config.namespace])
        kept = f" (children keep serving version {status['servedVersion']})" if status.get("servedVersion") else ""
        for ns in namespaces:
            try:
                body = self.cluster.get_platform(ns, name)
            except ApiException as exc:
                message = f"cannot read Platform {ns}/{name}: {exc.status} {exc.reason}{kept}"
                raise _Outcome([Condition("Degraded", "True", "PlatformUnavailable", message)],
                               kopf.TemporaryError(message)) from None
            if body is None:
                continue
            ok, why = platform_plan.usable(body)
            if not ok:
                raise _Outcome(_no_platform("PlatformNotReady", why + kept, bool(kept)), kopf.TemporaryError(why))
            try:
                return platform_plan.in_cluster(platform_plan.parse(body), self.config.tracking_uri)
            except SpecError as exc:  # the Platform changed since its status was written
                message = f"Platform {ns}/{name} is invalid: {exc}"
                raise _Outcome(_no_platform("PlatformNotReady", message + kept, bool(kept)),
                               kopf.TemporaryError(message)) from None
        message = (f"no Platform named '{name}' in namespace {' or '.join(namespaces)}: create one (the mlplane "
                   f"chart installs its `platform:` value as Platform '{platform_plan.DEFAULT_PLATFORM}') or "
                   "fix spec.platform")
        raise _Outcome(_no_platform("PlatformNotFound", message + kept, bool(kept)), kopf.TemporaryError(message))

    def _check_service_account(self, deployment: ModelDeployment, platform: Platform,
                               status: Mapping[str, Any]) -> None:
        """The model servers' account (the Platform's `spec.serving.serviceAccountName`) must exist in the
        deployment's namespace, or its pods are never created: `ServiceAccountMissing`, nothing applied,
        retried (the account may be created later, e.g. by adding the namespace to the chart)."""
        namespace = deployment.metadata.namespace or DEFAULT_NAMESPACE
        name = platform.spec.serving.service_account_name
        kept = f" (children keep serving version {status['servedVersion']})" if status.get("servedVersion") else ""
        try:
            exists = self.cluster.service_account_exists(namespace, name)
        except ApiException as exc:
            message = f"cannot read ServiceAccount {namespace}/{name}: {exc.status} {exc.reason}{kept}"
            raise _Outcome([Condition("Degraded", "True", "ServiceAccountUnavailable", message)],
                           kopf.TemporaryError(message)) from None
        problem = service_account_problem(platform, namespace, [name] if exists else [])
        if problem is not None:
            raise _Outcome(_no_platform("ServiceAccountMissing", problem + kept, bool(kept)),
                           kopf.TemporaryError(problem))

    def _tracking_uri_of(self, body: Mapping[str, Any]) -> str | None:
        """The MLflow a (deleted) deployment was served from: its Platform's, else the operator's."""
        name = platform_plan.platform_name(body)
        for ns in dict.fromkeys([plan.namespace(body), self.config.namespace]):
            try:
                found = self.cluster.get_platform(ns, name)
                if found is not None:
                    return platform_plan.tracking_uri(platform_plan.parse(found), self.config.tracking_uri)
            except (ApiException, SpecError):
                break
        return self.config.tracking_uri

    # ------------------------------------------------------------------ Platform changes
    def notify(self, targets: list[tuple[str, str]], revision: str, logger: kopf.Logger) -> None:
        """Tell each deployment in `targets` about its Platform's `revision` (an annotation: kopf then runs
        its update handler). A failure is logged: the deployment's resync timer catches up."""
        for namespace, name in targets:
            try:
                self.cluster.annotate_deployment(namespace, name, platform_plan.REVISION_ANNOTATION, revision)
            except ApiException as exc:
                logger.warning(f"cannot tell ModelDeployment {namespace}/{name} about its Platform's change: "
                               f"{exc.status} {exc.reason}")

    # ------------------------------------------------------------------ delete
    def delete(self, body: kopf.Body, retry: int, logger: kopf.Logger) -> None:
        """Remove the children and the MLflow served-by tag of a deleted ModelDeployment."""
        meta = body["metadata"]
        namespace = plan.namespace(body)
        with self._guard:
            self._locks.pop(meta["uid"], None)
        for kind in CHILD_KINDS:
            for obj in self.cluster.list(kind, namespace, meta["name"]):
                if plan.owned_by(obj, meta["uid"]):
                    self.cluster.delete(obj)
        try:
            ref = parse_model_ref(str((body.get("spec") or {}).get("model", "")))
        except ValueError:
            return  # an invalid spec never tagged anything
        if ref.kind == "uri":
            return  # storage URIs are not in the registry: nothing was tagged
        registry = self.registry(self._tracking_uri_of(body))
        if registry is None:
            return
        try:
            registry.unmark(ref.name, plan.served_by_tag(namespace, meta["name"]))
        except RegistryError as exc:
            if retry < 3:
                raise kopf.TemporaryError(f"cannot remove the served-by tag yet: {exc}",
                                          delay=self.backoff(retry)) from None
            logger.warning(f"giving up on removing the served-by tag from {ref.uri}: {exc}")


def _invalid(message: str) -> list[Condition]:
    return [Condition("Ready", "False", "InvalidSpec", message),
            Condition("ModelResolved", "Unknown", "InvalidSpec", "the spec is invalid"),
            Condition("Progressing", "False", "InvalidSpec", "fix the spec; nothing is retried until it changes"),
            Condition("Degraded", "True", "InvalidSpec", message)]


def _no_platform(reason: str, message: str, serving: bool) -> list[Condition]:
    updates = [Condition("Degraded", "True", reason, message)]
    if not serving:
        updates.append(Condition("Ready", "False", reason, message))
    return updates


def _unresolved(reason: str, message: str) -> list[Condition]:
    return [Condition("ModelResolved", "False" if reason == "ModelNotFound" else "Unknown", reason, message),
            Condition("Degraded", "True", reason, message)]


def _unavailable(registry: ModelRegistry, exc: RegistryError, served: str | None) -> str:
    kept = f" (children keep serving version {served})" if served else ""
    return f"MLflow at {registry.tracking_uri} did not answer: {exc}{kept}"


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)[:300]
    except ValueError:
        return str(exc.body)[:300]
