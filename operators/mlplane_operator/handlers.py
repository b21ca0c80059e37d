"""kopf handlers: thin wrappers that call one `Controller.reconcile()` (and `delete()` on deletion).

:func:`register` puts them on a kopf registry; `python -m mlplane_operator` (:mod:`mlplane_operator.__main__`)
registers them on a registry of its own with settings from the environment and runs kopf on it.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from mlplane_operator import platform_plan
from mlplane_operator.config import OperatorConfig
from mlplane_operator.kube import GROUP, PLATFORMS, PLURAL, VERSION, Cluster
from mlplane_operator.platform_reconcile import PlatformController
from mlplane_operator.reconcile import Controller, _utcnow

FINALIZER = "mlplane.io/finalizer"
ANNOTATIONS_PREFIX = "mlplane.io"
# MLflow's client retries a failed request up to 7 times with growing pauses (minutes); the operator
# retries with its own delay instead, so one unreachable MLflow never holds a worker for long.
MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def configure(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's own settings: names under mlplane.io, no CRD scanning (log lines are not posted as events)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration")
    settings.scanning.disabled = True  # the resources are known: no need to list or watch CRDs
    # A deleted object keeps its finalizer until its resync timer has stopped; look again this often.
    settings.background.cancellation_polling = config.retry_seconds


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register the operator's handlers on `registry`; `config` holds every setting, intervals included."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings, config)
        for name, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        cluster = Cluster.connect()
        memo.controller = Controller(config, cluster)
        memo.platforms = PlatformController(config, cluster, _utcnow)

    # Explicit ids: kopf keys its progress annotations (mlplane.io/<id>) by them.
    @kopf.on.resume(*resource, id="reconcile", registry=registry)
    @kopf.on.create(*resource, id="reconcile", registry=registry)
    @kopf.on.update(*resource, id="reconcile", registry=registry)
    def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, retry: int,
                  **_: Any) -> None:
        memo.controller.reconcile(body, patch, logger, retry)

    @kopf.timer(*resource, id="resync", interval=config.resync_seconds, initial_delay=config.resync_seconds,
                registry=registry)
    def resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
        try:
            memo.controller.reconcile(body, patch, logger, kwargs.get("retry", 0))
        except kopf.PermanentError:
            pass  # already in status; the spec must change first, and then the update handler runs

    # Platforms: no finalizer (nothing outside Kubernetes to clean up); their children carry owner
    # references, so the garbage collector removes them with the Platform. A ModelDeployment reads its
    # Platform on every reconcile; a Platform that is created, reconciled anew or deleted reaches the
    # deployments that use it at once (see `notify_deployments`), not only on their resync timer.
    platforms = (GROUP, VERSION, PLATFORMS)

    # In-memory indices kopf keeps from the watch streams (no extra API calls): the deployments by
    # the Platform name they use, with the Platform revision they last saw; the namespaces holding a
    # Platform of each name.
    @kopf.index(*resource, id="deployments_by_platform", registry=registry)
    def deployments_by_platform(body: kopf.Body, **_: Any) -> dict[str, tuple[str, str, str | None]]:
        return {platform_plan.platform_name(body): platform_plan.deployment_entry(body)}

    @kopf.index(*platforms, id="platform_namespaces", registry=registry)
    def platform_namespaces(name: str, namespace: str | None, **_: Any) -> dict[str, str | None]:
        return {name: namespace}

    # kopf passes its indices as keyword arguments by name; its WatchingFn protocol has no way to say so
    @kopf.on.event(*platforms, id="notify-deployments", registry=registry)  # type: ignore[arg-type]
    def notify_deployments(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                           deployments_by_platform: kopf.Index[str, tuple[str, str, str | None]],
                           platform_namespaces: kopf.Index[str, str], **_: Any) -> None:
        """Level-based: every deployment using this Platform whose annotation names another revision of
        it gets the current one (an update, so it reconciles now); those up to date are left alone."""
        revision = platform_plan.revision(body, event.get("type"))
        if revision is None:  # not reconciled yet: its status write comes as a later event
            return
        name, namespace = body["metadata"]["name"], body["metadata"].get("namespace") or config.namespace
        targets = platform_plan.to_notify(namespace, revision, config.namespace,
                                          list(deployments_by_platform.get(name, ())),
                                          set(platform_namespaces.get(name, ())))
        memo.controller.notify(targets, revision, logger)

    @kopf.on.resume(*platforms, id="reconcile", registry=registry)
    @kopf.on.create(*platforms, id="reconcile", registry=registry)
    @kopf.on.update(*platforms, id="reconcile", registry=registry)
    def reconcile_platform(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger,
                           **_: Any) -> None:
        memo.platforms.reconcile(body, patch, logger)

    @kopf.timer(*platforms, id="resync", interval=config.resync_seconds, initial_delay=config.resync_seconds,
                registry=registry)
    def resync_platform(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger,
                        **_: Any) -> None:
        try:
            memo.platforms.reconcile(body, patch, logger)
        except kopf.PermanentError:
            pass  # already in status; the update handler runs when the spec changes

    @kopf.on.delete(*resource, id="cleanup", registry=registry)
    def delete(body: kopf.Body, memo: kopf.Memo, retry: int, logger: kopf.Logger, **_: Any) -> None:
        memo.controller.delete(body, retry, logger)
