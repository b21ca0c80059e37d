"""The deployment manager: turns a ModelDeployment into a running model server and keeps it serving.

For each request it resolves the model (:func:`mlplane.resolution.resolve_model`, the cluster's
resolution too), plans it (:func:`mlplane.runtime.local.local_plan.plan_deployment`, pure) and
executes the plan: writes the prepared files, starts the server through the
:class:`~mlplane.runtime.local.runner.ComponentRunner`, or switches a running server to another
version in place. It also follows registry aliases and reloads a model a server lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlplane.features.local import FeatureLookupError
from mlplane.features.local import check_deployment as check_features
from mlplane.registry import MlflowRegistry, RegistryError, set_alias
from mlplane.resolution import ResolvedModel, resolve_model
from mlplane.runtime.local.components import (
    Component,
    Deployment,
    NotFound,
    OperationError,
    error_text,
    log_tail,
    readiness,
    write_prepared,
)
from mlplane.runtime.local.local_plan import LocalPlan, PlanError, check_deployment, plan_deployment, port_keys
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.runner import ComponentRunner
from mlplane.runtime.local.runtimes import ServingContext
from mlplane.runtime.local.triton_control import grpc_model_load
from mlplane.spec import ModelDeployment, Platform, SpecError, dump_yaml, load_file

log = logging.getLogger("mlplane.supervisor")

UNREADY_CHECKS = 2  # consecutive definite "not ready" answers before the model is reloaded
LOAD_TIMEOUT_S = 600.0  # a version switch: the new version loads and warms up next to the served one


@dataclass
class PlatformState:
    """What the supervisor and the deployment manager share about the running platform."""

    platform: Platform
    paths: StatePaths
    components: dict[str, Component] = field(default_factory=dict)  # platform components and model servers
    deployments: dict[str, Deployment] = field(default_factory=dict)
    tracking_uri: str = ""
    vector_store_uri: str | None = None
    control_key: str = field(default="", repr=False)  # the per-platform model-control secret, never logged
    control_headers: dict[str, str] = field(default_factory=dict, repr=False)  # auth on: the supervisor's key
    restore_errors: dict[str, str] = field(default_factory=dict)  # saved deployments that could not start


class DeploymentManager:
    def __init__(self, state: PlatformState, runner: ComponentRunner, http: httpx.AsyncClient,
                 port: Callable[[str], int], changed: Callable[[], None]):
        self.state = state
        self.runner = runner
        self.http = http
        self.port = port  # a port for a key, kept across restarts (ports.json)
        self.changed = changed

    @property
    def platform(self) -> Platform:
        return self.state.platform

    def context(self) -> ServingContext:
        s = self.state
        return ServingContext(s.paths, s.tracking_uri, s.platform, s.vector_store_uri, control_key=s.control_key)

    def plan(self, dep: ModelDeployment, resolved: ResolvedModel, ports: dict[str, int]) -> LocalPlan:
        try:
            return plan_deployment(dep, self.platform, resolved, ports, self.context())
        except PlanError as exc:
            raise OperationError(str(exc), code=2) from None

    async def resolve(self, dep: ModelDeployment, served: ResolvedModel | None = None) -> ResolvedModel:
        """What ``dep`` serves now: the one resolution `mlplane render` and the operator use too
        (:func:`mlplane.resolution.resolve_model`); ``served`` is returned when the reference still points at it."""
        uri = self.state.tracking_uri
        try:
            return await asyncio.to_thread(resolve_model, dep, self.platform, MlflowRegistry(uri), served=served)
        except RegistryError as exc:
            raise OperationError(str(exc)) from None
        except ValueError as exc:  # a signature the runtime cannot express
            raise OperationError(f"deployment '{dep.metadata.name}': {exc}", code=2) from None
        except Exception as exc:  # the registry itself is unreachable or broken
            raise OperationError(f"MLflow at {uri} did not answer: {exc}") from None

    # ----------------------------------------------------------------- requests
    async def restore(self) -> None:
        """Bring back the deployments of earlier sessions; one that fails is reported, not fatal."""
        for file in sorted(self.state.paths.deployments.glob("*.yaml")):
            try:
                (dep,) = load_file(file)
                if not isinstance(dep, ModelDeployment):
                    raise OperationError(f"expected a ModelDeployment, found a {dep.kind}")
                await self.deploy(dep, persist=False)
            except (SpecError, OperationError, ValueError) as exc:
                # Kept: the file stays, `status` lists it as failed with the reason, the next `up` retries it.
                log.error("could not restore deployment from %s: %s", file, exc)
                self.state.restore_errors[file.stem] = str(exc).splitlines()[0]
                self.changed()

    async def deploy(self, dep: ModelDeployment, persist: bool = True) -> dict[str, Any]:
        name = dep.metadata.name
        try:
            check_deployment(dep, self.platform)  # refused before anything is resolved or started
        except PlanError as exc:
            raise OperationError(str(exc), code=2) from None
        if dep.spec.features is not None:  # unknown features are refused before anything starts
            await self._check_features(dep)
        current = self.state.deployments.get(name)
        # Only the model changed: switch inside the running server. Anything else: a new server.
        in_place = current is not None and (current.spec.spec.model_dump(exclude={"model"})
                                            == dep.spec.model_dump(exclude={"model"}))
        resolved = await self.resolve(dep, served=current.resolved if current is not None and in_place else None)
        if current is not None and in_place and current.component.status in ("ready", "restarting", "starting"):
            async with current.lock:
                current.spec = dep
                if resolved.uri != current.resolved.uri:
                    await self.swap(current, resolved)
                current.refresh_info()
        else:
            # The ports it had (kept while the old server stops); planned before anything stops: a refusal
            # changes nothing.
            plan = self.plan(dep, resolved, {key: self.port(key) for key in port_keys(dep, self.platform)})
            await asyncio.to_thread(write_prepared, plan.prepared)
            if current is not None:
                await asyncio.to_thread(self.runner.stop, current.component)
            current = await self._start(dep, resolved, plan)
        if persist:
            (self.state.paths.deployments / f"{name}.yaml").write_text(dump_yaml([dep]))
        self.changed()
        return describe(current)

    async def _check_features(self, dep: ModelDeployment) -> None:
        try:
            await asyncio.to_thread(check_features, self.platform, self.state.paths.feast_dir, dep)
        except FeatureLookupError as exc:
            raise OperationError(f"deployment '{dep.metadata.name}': {exc}", code=2) from None

    async def _start(self, dep: ModelDeployment, resolved: ResolvedModel, plan: LocalPlan) -> Deployment:
        name = dep.metadata.name
        comp = Component(spec=plan.process)
        current = Deployment(spec=dep, resolved=resolved, plan=plan, component=comp)
        current.refresh_info()
        self.state.components[name] = comp
        self.state.deployments[name] = current
        async with current.lock:
            await self.runner.start(comp)
        if comp.status != "ready":
            del self.state.components[name], self.state.deployments[name]
            self.changed()
            raise OperationError(f"model server for '{name}' did not start: {comp.error}\n"
                                 + log_tail(comp.spec.log))
        return current

    async def swap(self, dep: Deployment, resolved: ResolvedModel) -> None:
        """Load ``resolved`` next to the served model inside the server, then switch atomically.

        The server keeps answering on the old model until the new one is loaded and warmed up;
        in-flight requests finish on the old one. No proxy, no failed request. The request goes where
        only mlplane reaches: the kserve server's control socket, or Triton's restricted API with the key.
        """
        name = dep.spec.metadata.name
        plan = self.plan(dep.spec, resolved, dep.plan.ports)
        await asyncio.to_thread(write_prepared, plan.prepared)
        load = plan.load
        headers = {"Connection": "close", **self.state.control_headers, **load.headers}
        r: httpx.Response | None = None
        try:
            if load.grpc_metadata is not None and dep.endpoint.grpc:  # Triton: see runtime.local.triton_control
                r = await grpc_model_load(dep.endpoint.grpc, name, load.grpc_metadata, timeout=LOAD_TIMEOUT_S)
            elif load.socket is not None:
                transport = httpx.AsyncHTTPTransport(uds=str(load.socket))
                async with httpx.AsyncClient(transport=transport) as control:
                    r = await control.post("http://model-control" + load.path, json=dict(load.body),
                                           timeout=LOAD_TIMEOUT_S, headers=headers)
            else:
                r = await self.http.post(dep.endpoint.url + load.path, json=dict(load.body), timeout=LOAD_TIMEOUT_S,
                                         headers=headers)
        except httpx.HTTPError as exc:
            failure = f"model server for '{name}' did not answer the load: {exc}"
        if r is None or r.status_code != 200:
            if r is not None:
                failure = (f"model server for '{name}' refused version {resolved.version}: "
                           f"{error_text(r)}; still serving version {dep.resolved.version}")
            # A restart must come back on the served version.
            await asyncio.to_thread(write_prepared, dep.plan.prepared)
            raise OperationError(failure)
        dep.resolved = resolved
        dep.plan = plan
        dep.component.spec = plan.process
        dep.refresh_info()
        self.changed()

    async def promote(self, name: str, version: str) -> dict[str, Any]:
        dep = self.get(name)
        ref = dep.spec.model_ref
        before = dep.resolved.version
        if ref.kind == "uri":
            raise OperationError(f"'{name}' serves a storage URI ({ref.uri}); promote needs a "
                                 "registry model (models:/NAME@ALIAS or models:/NAME/VERSION)", code=2)
        if ref.kind == "alias":
            # The alias moves first (deploy follows it), and moves back when the server refuses the version:
            # a refused promote leaves the registry as it was, and says so.
            aliased = (await self.resolve(dep.spec)).version
            uri = self.state.tracking_uri
            try:
                await asyncio.to_thread(set_alias, uri, ref.name, ref.alias, version)
            except RegistryError as exc:
                raise OperationError(str(exc)) from None
            try:
                result = await self.deploy(dep.spec)
            except OperationError as exc:
                try:
                    await asyncio.to_thread(set_alias, uri, ref.name, ref.alias, aliased)
                    undo = f"'{ref.name}@{ref.alias}' is back on version {aliased}"
                except Exception as undo_exc:  # say so: the alias sync would keep retrying the refused version
                    undo = (f"moving '{ref.name}@{ref.alias}' back to version {aliased} failed ({undo_exc}); "
                            f"set it back with MLflow")
                log.warning("%s: promote to version %s refused; %s", name, version, undo)
                raise OperationError(f"{exc}\n{undo}", code=exc.code) from None
        else:
            new_spec = dep.spec.model_copy(deep=True)
            new_spec.spec.model = f"models:/{ref.name}/{version}"
            result = await self.deploy(new_spec)
        result["previousVersion"] = before
        return result

    async def undeploy(self, name: str) -> dict[str, Any]:
        state = self.state
        if name not in state.deployments and name in state.restore_errors:  # saved, but it could not be restored
            with contextlib.suppress(FileNotFoundError):
                (state.paths.deployments / f"{name}.yaml").unlink()
            del state.restore_errors[name]
            self.changed()
            return {"name": name, "status": "removed"}
        dep = self.get(name)
        async with dep.lock:
            await asyncio.to_thread(self.runner.stop, dep.component)
            del state.deployments[name], state.components[name]
        with contextlib.suppress(FileNotFoundError):
            (state.paths.deployments / f"{name}.yaml").unlink()
        if dep.plan.workdir is not None:
            await asyncio.to_thread(shutil.rmtree, dep.plan.workdir, True)
        self.changed()
        return {"name": name, "status": "removed"}

    def get(self, name: str) -> Deployment:
        if name not in self.state.deployments:
            known = ", ".join(sorted(self.state.deployments)) or "none"
            raise NotFound(f"no deployment named '{name}' (deployed: {known})")
        return self.state.deployments[name]

    # ----------------------------------------------------------------- keeping them serving
    async def restart(self, name: str, dep: Deployment) -> None:
        """Start a crashed model server again, on what the deployment serves now (its component's spec is the
        plan's process: :meth:`swap` replaces both)."""
        await self.runner.restart(name, dep.component, lock=dep.lock,
                                  alive=lambda: self.state.deployments.get(name) is dep)

    async def check_models(self) -> None:
        """Probe every ready deployment's model; one that answers "not ready" is reloaded (or its server restarted)."""
        deps = [(n, d) for n, d in self.state.deployments.items() if d.component.status == "ready"]
        results = await asyncio.gather(*(readiness(self.http, d.component.spec.ready_url) for _, d in deps))
        for (name, dep), (ready, detail) in zip(deps, results, strict=True):
            comp = dep.component
            if ready or detail is None:  # ready, or no definite answer (a busy server): nothing to do
                comp.unready_checks = 0 if ready else comp.unready_checks
                continue
            comp.unready_checks += 1
            if comp.unready_checks >= UNREADY_CHECKS:
                comp.unready_checks = 0
                try:
                    await self._heal(name, dep, detail)
                except Exception:  # the next check tries again
                    log.exception("reloading %s failed", name)

    async def _heal(self, name: str, dep: Deployment, detail: str) -> None:
        """Reload a deployment whose server runs but whose model is not ready; restart the server if that fails."""
        comp = dep.component
        async with dep.lock:
            if self.state.deployments.get(name) is not dep or comp.status != "ready":
                return
            if (await readiness(self.http, comp.spec.ready_url))[0]:  # a switch finished meanwhile
                return
            version = dep.resolved.version or dep.resolved.uri
            log.warning("%s: the server runs but its model is not ready (%s); reloading version %s",
                        name, detail, version)
            comp.status = "reloading"
            comp.error = f"model not ready ({detail}); reloading version {version}"
            self.changed()
            try:
                await self.swap(dep, dep.resolved)
                ready = (await readiness(self.http, comp.spec.ready_url))[0]
                failure = "" if ready else "still not ready after the reload"
            except OperationError as exc:
                failure = str(exc).splitlines()[0]
            if not failure:
                comp.status = "ready"
                comp.reloads += 1
                comp.error = ""
                comp.info["lastReload"] = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')}: model was not ready ({detail}); "
                                           f"reloaded version {version}")
                log.info("%s: reloaded version %s", name, version)
                self.changed()
                return
            log.warning("%s: reload failed (%s); restarting the model server", name, failure)
            comp.error = f"model not ready ({detail}); reload failed ({failure}); restarting the model server"
            await asyncio.to_thread(self.runner.stop, comp, "restarting")
            comp.restart_at = time.monotonic()
            self.changed()

    async def sync_aliases(self) -> None:
        """Level-based: a deployment on ``models:/name@alias`` follows the alias wherever it moves."""
        for dep in list(self.state.deployments.values()):
            if dep.spec.model_ref.kind != "alias" or dep.component.status != "ready":
                continue
            try:
                resolved = await self.resolve(dep.spec, served=dep.resolved)  # unmoved: no signature re-read
                if resolved.uri == dep.resolved.uri:
                    continue
                async with dep.lock:
                    # A promote may have switched while we waited for the lock.
                    if resolved.uri != dep.resolved.uri and self.state.deployments.get(dep.spec.metadata.name) is dep:
                        log.info("%s: alias moved to version %s", dep.spec.metadata.name, resolved.version)
                        await self.swap(dep, resolved)
            except OperationError as exc:
                log.warning("alias sync for %s: %s", dep.spec.metadata.name, exc)


def describe(dep: Deployment) -> dict[str, Any]:
    return {"name": dep.spec.metadata.name, **dep.component.to_state()}
