"""The local supervisor: a daemon that runs the platform's components as supervised processes.

One supervisor per state dir (an exclusive ``flock`` on ``supervisor.lock``). It starts MLflow,
restores the deployments saved in the state dir, restarts crashed components with exponential
backoff, follows registry aliases, writes ``state.json`` for ``mlplane status``/``logs`` from any
shell, and answers the CLI on a Unix socket (one JSON request and one JSON reply per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlplane.auth import KeyStore
from mlplane.registry import MlflowRegistry, RegistryError
from mlplane.resolution import resolve_model
from mlplane.runtime.local import process
from mlplane.runtime.local.components import (
    BACKOFF_INITIAL_S,
    Component,
    Deployment,
    OperationError,
    error_text,
    log_tail,
    prepare_mlflow_auth,
    probe,
    readiness,
    write_prepared,
)
from mlplane.runtime.local.paths import StateFileError, StatePaths, quarantine, read_json_object, write_private
from mlplane.runtime.local.plan import (
    FEATURE_STORE_COMPONENT,
    MLFLOW_COMPONENT,
    RESERVED_NAMES,
    VECTOR_STORE_COMPONENT,
    Endpoint,
    ProcessSpec,
    ResolvedModel,
    feature_server_process,
    milvus_lite_process,
    mlflow_process,
    with_features,
)
from mlplane.runtime.local.runtimes import ServingContext, UnsupportedRuntime, runtime_of
from mlplane.spec import ModelDeployment, Platform, SpecError, dump_yaml, load_file
from mlplane.spec.effective import effective_runtime
from mlplane.spec.rules import check_effective

log = logging.getLogger("mlplane.supervisor")

STATE_FORMAT = 1
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0
MONITOR_INTERVAL_S = 0.5
ALIAS_SYNC_INTERVAL_S = 10.0
READINESS_INTERVAL_S = 2.0  # how often a ready deployment's model readiness is checked
UNREADY_CHECKS = 2  # consecutive definite "not ready" answers before the model is reloaded


class Supervisor:
    def __init__(self, paths: StatePaths, platform: Platform):
        self.paths = paths
        self.platform = platform
        self.host = platform.spec.serving.host
        self.components: dict[str, Component] = {}
        self.deployments: dict[str, Deployment] = {}
        self.tracking_uri = ""
        self.vector_store_uri: str | None = platform.spec.vector_store.uri  # set when the platform runs Milvus
        self.started_at = time.time()
        self.restore_errors: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._restarts: set[asyncio.Task[None]] = set()
        self._readiness: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient()
        self._control_headers: dict[str, str] = {}  # with auth on: the supervisor's key, for version switches
        self._control_key = ""  # the per-platform model-control secret (Triton's restricted API), never logged
        self._lock_fd: int | None = None
        self.warnings: list[str] = []  # state-file problems found at start, shown by `up` and `status`
        self._ports = self._read_ports()
        # What a supervisor that is gone left running: adopted when healthy and unchanged, else stopped.
        self._previous: dict[str, dict[str, Any]] = self._read_previous()

    def _read_ports(self) -> dict[str, int]:
        try:
            ports = read_json_object(self.paths.ports_file, move_aside=False) or {}
        except StateFileError as exc:
            ports = None
            why = str(exc)
        else:
            bad = [k for k, v in ports.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536]
            why = f"{self.paths.ports_file} has entries that are not ports: {', '.join(sorted(bad))}" if bad else ""
        if not why:
            return ports
        with contextlib.suppress(OSError):
            why += f"; moved it to {quarantine(self.paths.ports_file)}"
        self.warnings.append(f"{why}: components get new ports, so their URLs change")
        log.warning("%s", self.warnings[-1])
        return {}

    def _read_previous(self) -> dict[str, dict[str, Any]]:
        try:
            state = read_json_object(self.paths.previous_state_file) or {}
        except StateFileError as exc:
            self.warnings.append(f"{exc}: processes of the earlier supervisor are not adopted")
            return {}
        entries = {**(state.get("components") or {}), **(state.get("deployments") or {})}
        return {name: e for name, e in entries.items()
                if isinstance(e, dict) and process.is_recorded_process(e.get("pid"), e.get("createTime"))}

    def _port(self, key: str) -> int:
        """A port for ``key``: the one it had last time when that one is still free (or held by the process of
        an earlier supervisor, which this one adopts or stops before it starts another)."""
        preferred = self._ports.get(key)
        if preferred and key.split("/")[0] in self._previous:
            port = preferred
        else:
            port = process.free_port(self.host, preferred=preferred)
        self._ports[key] = port
        write_private(self.paths.ports_file, json.dumps(self._ports, indent=2, sort_keys=True))
        return port

    def _digest(self, spec: ProcessSpec) -> str:
        """What identifies a process's configuration (keyed with the platform's secret: the env may hold one)."""
        text = json.dumps([spec.kind, list(spec.argv), sorted(spec.env.items()), spec.ready_url, str(spec.log),
                           [str(f) for f in getattr(spec, "env_files", ())]])
        return hmac.new(self._control_key.encode(), text.encode(), hashlib.sha256).hexdigest()

    # ----------------------------------------------------------------- lifecycle
    def acquire_lock(self) -> None:
        self.paths.ensure()
        fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OperationError(f"a platform is already running on {self.paths.root}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        server = await asyncio.start_unix_server(self._handle, path=str(self.paths.socket))
        os.chmod(self.paths.socket, 0o600)
        self.write_state("starting")
        try:
            try:
                await self._start_platform()
                await self._start_feature_store()
            except OperationError as exc:
                self._error = str(exc)
                raise
            await self._restore_deployments()
            await asyncio.to_thread(self._stop_unadopted)
            self.write_state("running")
            monitor = asyncio.create_task(self._monitor())
            await self._stopping.wait()
            monitor.cancel()
            for task in list(self._restarts):
                task.cancel()
            if self._readiness is not None:
                self._readiness.cancel()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.paths.socket.unlink()
            await self._shutdown()

    async def _start_platform(self) -> None:
        self._control_key = await asyncio.to_thread(control_key, self.paths)
        if self.platform.spec.auth.enabled:  # a fresh key each session: hashed in the key file, the key in memory
            key = await asyncio.to_thread(KeyStore(self.paths.auth_keys_file).issue_system_key)
            self._control_headers = {"Authorization": f"Bearer {key}"}
        tracking = self.platform.spec.tracking
        if tracking.mode == "external":
            self.tracking_uri = str(tracking.uri)
            await self._start_vector_store()
            return
        port = tracking.port or self._port(MLFLOW_COMPONENT)
        # With auth on, MLflow's own basic auth: nobody writes the registry without the platform's credentials.
        mlflow_auth = (await asyncio.to_thread(prepare_mlflow_auth, self.paths)
                       if self.platform.spec.auth.enabled else None)
        spec = mlflow_process(self.paths, self.host, port, tracking.backend_store_uri,
                              tracking.artifacts_destination, auth=mlflow_auth)
        comp = Component(spec=spec, info={"url": f"http://{self.host}:{port}"})
        self.components[MLFLOW_COMPONENT] = comp
        self.tracking_uri = f"http://{self.host}:{port}"
        await self._start(comp)
        if comp.status != "ready":
            raise OperationError(f"MLflow did not start: {comp.error}")
        await self._start_vector_store()

    async def _start_vector_store(self) -> None:
        """With ``spec.vectorStore`` enabled on backend 'milvus-lite': a Milvus Lite server on this host."""
        store = self.platform.spec.vector_store
        if not store.enabled or store.backend != "milvus-lite":
            return
        port = store.port or self._port(VECTOR_STORE_COMPONENT)
        self.paths.milvus_dir.mkdir(parents=True, exist_ok=True)
        self.vector_store_uri = f"http://{self.host}:{port}"
        comp = Component(spec=milvus_lite_process(self.paths, self.host, port),
                         info={"url": self.vector_store_uri, "dataDir": str(self.paths.milvus_dir)})
        self.components[VECTOR_STORE_COMPONENT] = comp
        await self._start(comp)
        if comp.status != "ready":
            raise OperationError(f"the Milvus Lite vector store did not start: {comp.error}")

    async def _start_feature_store(self) -> None:
        """With ``spec.featureStore.enabled``: write the Feast repo config and run ``feast serve`` on it."""
        store = self.platform.spec.feature_store
        if not store.enabled:
            return
        from mlplane.features.local import write_repo_config

        config = await asyncio.to_thread(write_repo_config, self.platform, self.paths.feast_dir)
        port = store.port or self._port(FEATURE_STORE_COMPONENT)
        comp = Component(spec=feature_server_process(self.paths, self.host, port),
                         info={"url": f"http://{self.host}:{port}", "featureStoreYaml": str(config)})
        self.components[FEATURE_STORE_COMPONENT] = comp
        await self._start(comp)
        if comp.status != "ready":
            raise OperationError(f"the Feast feature server did not start: {comp.error}")

    async def _restore_deployments(self) -> None:
        """Bring back the deployments of earlier sessions; one that fails is reported, not fatal."""
        for file in sorted(self.paths.deployments.glob("*.yaml")):
            try:
                (dep,) = load_file(file)
                if not isinstance(dep, ModelDeployment):
                    raise OperationError(f"expected a ModelDeployment, found a {dep.kind}")
                await self.deploy(dep, persist=False)
            except (SpecError, OperationError, ValueError) as exc:
                # Kept: the file stays, `status` lists it as failed with the reason, the next `up` retries it.
                log.error("could not restore deployment from %s: %s", file, exc)
                self.restore_errors[file.stem] = str(exc).splitlines()[0]
                self.write_state()

    def _stop_unadopted(self) -> None:
        """Stop what the earlier supervisor left running and this one did not adopt (pid and start time checked)."""
        for name, entry in self._previous.items():
            log.info("stopping %s (pid %s) left by the earlier supervisor", name, entry["pid"])
            process.stop_tree(entry["pid"], grace_s=float(self.platform.spec.serving.grace_period_seconds),
                              create_time=entry["createTime"])
        self._previous.clear()
        with contextlib.suppress(FileNotFoundError):
            self.paths.previous_state_file.unlink()

    async def _shutdown(self) -> None:
        self.write_state("stopping")
        names = list(self.deployments) + [n for n in self.components if n not in self.deployments]
        for name in names:
            comp = self.components.get(name)
            if comp is not None:
                await asyncio.to_thread(self._stop_component, comp)
        self.write_state("failed" if getattr(self, "_error", None) else "stopped")
        await self._http.aclose()

    # ----------------------------------------------------------------- processes
    async def _start(self, comp: Component) -> None:
        comp.status = "starting"
        comp.error = ""
        if await self._adopt(comp):
            return
        comp.proc = process.spawn(comp.spec)
        spawned = time.monotonic()
        self.write_state()
        deadline = time.monotonic() + comp.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if comp.proc.poll() is not None:
                comp.status = "failed"
                comp.error = f"exited with code {comp.proc.returncode}; see {comp.spec.log}"
                self.write_state()
                return
            if await probe(self._http, comp.spec.ready_url):
                comp.status = "ready"
                comp.ready_since = time.monotonic()
                # Start to ready, as measured here: `mlplane render` defaults spec.coldStartSeconds to it.
                comp.info["coldStartSeconds"] = round(comp.ready_since - spawned, 2)
                self.write_state()
                return
            await asyncio.sleep(0.2)
        comp.status = "failed"
        comp.error = f"not ready after {comp.spec.ready_timeout_s:.0f}s; see {comp.spec.log}"
        await asyncio.to_thread(self._stop_component, comp, "failed")
        self.write_state()

    async def _adopt(self, comp: Component) -> bool:
        """Take over the process an earlier supervisor ran for this component, when it still runs (same pid and
        start time), runs exactly what this one would start, and is ready: no restart, no failed request.
        Anything else it left under this name is stopped first, so the new process gets the ports."""
        entry = self._previous.pop(comp.spec.name, None)
        if entry is None:
            return False
        pid, ctime = entry["pid"], entry["createTime"]
        why = ""
        if entry.get("specDigest") != self._digest(comp.spec):
            why = "its configuration changed"
        elif not process.is_recorded_process(pid, ctime):
            why = "it is gone"
        elif not await self._ready_to_adopt(comp.spec.ready_url):
            why = "it is not ready"
        if why:
            log.info("%s: not adopting pid %s of the earlier supervisor (%s); starting a new one",
                     comp.spec.name, pid, why)
            grace = float(self.platform.spec.serving.grace_period_seconds)
            await asyncio.to_thread(process.stop_tree, pid, grace, ctime)
            return False
        comp.proc = process.AdoptedProcess(pid, ctime)
        comp.status = "ready"
        comp.ready_since = time.monotonic()
        comp.restarts = int(entry.get("restarts") or 0)
        if "coldStartSeconds" in entry:
            comp.info["coldStartSeconds"] = entry["coldStartSeconds"]
        log.info("%s: adopted pid %s of the earlier supervisor (ready, unchanged)", comp.spec.name, pid)
        self.write_state()
        return True

    async def _ready_to_adopt(self, url: str, attempts: int = 3) -> bool:
        """Ready, asked patiently: a server busy with requests may answer late, and adopting it beats a restart."""
        for _ in range(attempts):
            if url.startswith("tcp://"):
                ready, definite = await probe(self._http, url), True
            else:
                ready, detail = await readiness(self._http, url)
                definite = detail is not None
            if ready or definite:
                return ready
            await asyncio.sleep(1.0)
        return False

    def _stop_component(self, comp: Component, status: str = "stopped") -> None:
        comp.status = "stopping"  # the monitor must not take the exit for a crash and restart it
        if comp.proc is not None:
            grace = float(self.platform.spec.serving.grace_period_seconds)
            adopted = comp.proc.create_time if isinstance(comp.proc, process.AdoptedProcess) else None
            process.stop_tree(comp.proc.pid, grace_s=grace, create_time=adopted)
        comp.status = status

    async def _monitor(self) -> None:
        next_sync = time.monotonic() + ALIAS_SYNC_INTERVAL_S
        next_readiness = time.monotonic() + READINESS_INTERVAL_S
        sync: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            now = time.monotonic()
            if not self.paths.state_file.exists():  # moved aside as corrupt (or deleted): `status` needs it back
                self.write_state()
            for name, comp in list(self.components.items()):
                if self.components.get(name) is not comp:  # undeployed or replaced meanwhile
                    continue
                try:
                    await self._supervise(name, comp, now)
                except Exception:  # one component's trouble must not stop the supervision of all
                    log.exception("supervising %s failed", name)
            if now >= next_sync and (sync is None or sync.done()):
                # In its own task: a switch can take minutes, crashes must still be noticed meanwhile.
                next_sync = now + ALIAS_SYNC_INTERVAL_S
                sync = asyncio.create_task(self._sync_aliases())
            if now >= next_readiness and (self._readiness is None or self._readiness.done()):
                # Alive is not enough: a server whose model was unloaded or failed answers health checks.
                next_readiness = now + READINESS_INTERVAL_S
                self._readiness = asyncio.create_task(self._check_models())

    async def _check_models(self) -> None:
        """Probe every ready deployment's model; one that answers "not ready" is reloaded (or its server restarted)."""
        deps = [(n, d) for n, d in self.deployments.items() if d.component.status == "ready"]
        results = await asyncio.gather(*(readiness(self._http, d.component.spec.ready_url) for _, d in deps))
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
            if self.deployments.get(name) is not dep or comp.status != "ready":
                return
            ready, detail = (await readiness(self._http, comp.spec.ready_url))[0], detail
            if ready:  # a switch finished meanwhile
                return
            version = dep.resolved.version or dep.resolved.uri
            log.warning("%s: the server runs but its model is not ready (%s); reloading version %s",
                        name, detail, version)
            comp.status = "reloading"
            comp.error = f"model not ready ({detail}); reloading version {version}"
            self.write_state()
            try:
                await self._swap(dep, dep.resolved)
                ready = (await readiness(self._http, comp.spec.ready_url))[0]
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
                self.write_state()
                return
            log.warning("%s: reload failed (%s); restarting the model server", name, failure)
            comp.error = f"model not ready ({detail}); reload failed ({failure}); restarting the model server"
            await asyncio.to_thread(self._stop_component, comp, "restarting")
            comp.restart_at = time.monotonic()
            self.write_state()

    async def _supervise(self, name: str, comp: Component, now: float) -> None:
        if comp.status == "ready" and comp.proc is not None and comp.proc.poll() is not None:
            code = comp.proc.returncode
            exited = ("exited (adopted from an earlier supervisor: exit code unknown)"
                      if isinstance(comp.proc, process.AdoptedProcess) else f"exited with code {code}")
            log.warning("%s %s; restarting in %.0fs", name, exited, comp.backoff_s)
            process.kill_group_of_dead_leader(comp.proc.pid)  # e.g. model processes it had forked
            comp.status = "restarting"
            comp.error = exited
            comp.restart_at = now + comp.backoff_s
            comp.backoff_s = min(comp.backoff_s * 2, BACKOFF_MAX_S)
            self.write_state()
        elif comp.status == "restarting" and now >= comp.restart_at:
            comp.status = "starting"  # claimed: later passes leave it to the restart task
            # In its own task: readiness can take minutes, and other crashes must be noticed meanwhile.
            task = asyncio.create_task(self._restart(name, comp))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
        elif comp.status == "ready" and now - comp.ready_since > HEALTHY_RESET_S:
            comp.backoff_s = BACKOFF_INITIAL_S

    async def _restart(self, name: str, comp: Component) -> None:
        try:
            dep = self.deployments.get(name)
            async with dep.lock if dep else contextlib.nullcontext():
                if dep is not None:  # restart on what the deployment serves now
                    comp.spec = self._model_process(dep.spec, dep.resolved, dep.endpoint)
                comp.restarts += 1
                await self._start(comp)
        except Exception:  # the component stays down; the next attempt follows its backoff
            log.exception("restarting %s failed", name)
        if comp.status != "ready" and self.components.get(name) is comp:
            comp.status = "restarting"
            comp.restart_at = time.monotonic() + comp.backoff_s
            comp.backoff_s = min(comp.backoff_s * 2, BACKOFF_MAX_S)
            self.write_state()

    async def _sync_aliases(self) -> None:
        """Level-based: a deployment on ``models:/name@alias`` follows the alias wherever it moves."""
        for dep in list(self.deployments.values()):
            if dep.spec.model_ref.kind != "alias" or dep.component.status != "ready":
                continue
            try:
                resolved = await self._resolve(dep.spec, served=dep.resolved)  # unmoved: no signature re-read
                if resolved.uri == dep.resolved.uri:
                    continue
                async with dep.lock:
                    # A promote may have switched while we waited for the lock.
                    if resolved.uri != dep.resolved.uri and self.deployments.get(dep.spec.metadata.name) is dep:
                        log.info("%s: alias moved to version %s", dep.spec.metadata.name, resolved.version)
                        await self._swap(dep, resolved)
            except OperationError as exc:
                log.warning("alias sync for %s: %s", dep.spec.metadata.name, exc)

    # ----------------------------------------------------------------- deployments
    def _serving_context(self) -> ServingContext:
        serving = self.platform.spec.serving
        return ServingContext(self.paths, self.tracking_uri, serving.max_request_bytes,
                              serving.grace_period_seconds, self.platform.spec.auth, self.vector_store_uri,
                              control_key=self._control_key, grpc=serving.grpc)

    def _model_process(self, dep: ModelDeployment, resolved: ResolvedModel, endpoint: Endpoint) -> ProcessSpec:
        spec = runtime_of(dep, self.platform).process(self._serving_context(), dep.metadata.name, resolved, endpoint)
        if dep.spec.features is not None:
            from mlplane.features.local import features_json

            spec = with_features(spec, features_json(dep), self.paths.feature_store_yaml)
        return spec

    async def _prepare(self, dep: ModelDeployment, resolved: ResolvedModel) -> None:
        """Write what the runtime needs on disk for ``resolved`` (triton: the resolution's model repository)."""
        try:
            prepared = runtime_of(dep, self.platform).prepare(self._serving_context(), dep, resolved)
        except ValueError as exc:  # a missing binary, a runtime the platform's settings rule out
            raise OperationError(f"deployment '{dep.metadata.name}': {exc}", code=2) from None
        await asyncio.to_thread(write_prepared, prepared)

    async def _resolve(self, dep: ModelDeployment, served: ResolvedModel | None = None) -> ResolvedModel:
        """What ``dep`` serves now: the one resolution `mlplane render` and the operator use too
        (:func:`mlplane.resolution.resolve_model`); ``served`` is returned when the reference still points at it."""
        registry = MlflowRegistry(self.tracking_uri)
        try:
            return await asyncio.to_thread(resolve_model, dep, self.platform, registry, served=served)
        except RegistryError as exc:
            raise OperationError(str(exc)) from None
        except ValueError as exc:  # a signature the runtime cannot express
            raise OperationError(f"deployment '{dep.metadata.name}': {exc}", code=2) from None
        except Exception as exc:  # the registry itself is unreachable or broken
            raise OperationError(f"MLflow at {self.tracking_uri} did not answer: {exc}") from None

    async def deploy(self, dep: ModelDeployment, persist: bool = True) -> dict[str, Any]:
        name = dep.metadata.name
        if name in RESERVED_NAMES:
            raise OperationError(f"metadata.name: '{name}' is reserved; choose another name", code=2)
        try:
            runtime = runtime_of(dep, self.platform)  # spec.runtime, else the Platform's serving.defaultRuntime
        except UnsupportedRuntime as exc:
            raise OperationError(str(exc), code=2) from None
        refused = check_effective(dep.spec, effective_runtime(dep, self.platform))  # as render checks them
        if refused:
            raise OperationError(f"deployment '{name}': spec: " + "; ".join(refused), code=2)
        if dep.spec.features is not None:  # unknown features are refused before anything starts
            from mlplane.features.local import FeatureLookupError, check_deployment

            try:
                await asyncio.to_thread(check_deployment, self.platform, self.paths.feast_dir, dep)
            except FeatureLookupError as exc:
                raise OperationError(f"deployment '{name}': {exc}", code=2) from None
        current = self.deployments.get(name)
        # Only the model changed: switch inside the running server. Anything else: a new server.
        in_place = current is not None and (current.spec.spec.model_dump(exclude={"model"})
                                            == dep.spec.model_dump(exclude={"model"}))
        resolved = await self._resolve(dep, served=current.resolved if current is not None and in_place else None)
        if current is not None and in_place and current.component.status in ("ready", "restarting", "starting"):
            async with current.lock:
                current.spec = dep
                if resolved.uri != current.resolved.uri:
                    await self._swap(current, resolved)
                current.refresh_info()
        else:
            await self._prepare(dep, resolved)  # before stopping anything: a refusal changes nothing
            if current is not None:
                await asyncio.to_thread(self._stop_component, current.component)
            grpc_port = self._port(f"{name}/grpc") if self.platform.spec.serving.grpc and runtime.grpc else None
            metrics_port = self._port(f"{name}/metrics") if runtime.metrics_port else None
            endpoint = Endpoint(self.host, self._port(f"{name}/http"), grpc_port, metrics_port)
            comp = Component(spec=self._model_process(dep, resolved, endpoint))
            current = Deployment(spec=dep, resolved=resolved, endpoint=endpoint, component=comp,
                                 runtime=effective_runtime(dep, self.platform))
            current.refresh_info()
            self.components[name] = comp
            self.deployments[name] = current
            async with current.lock:
                await self._start(comp)
            if comp.status != "ready":
                del self.components[name], self.deployments[name]
                self.write_state()
                raise OperationError(f"model server for '{name}' did not start: {comp.error}\n"
                                     + log_tail(comp.spec.log))
        if persist:
            (self.paths.deployments / f"{name}.yaml").write_text(dump_yaml([dep]))
        self.write_state()
        return self._describe(current)

    async def _swap(self, dep: Deployment, resolved: ResolvedModel) -> None:
        """Load ``resolved`` next to the served model inside the server, then switch atomically.

        The server keeps answering on the old model until the new one is loaded and warmed up;
        in-flight requests finish on the old one. No proxy, no failed request. The request goes where
        only mlplane reaches: the kserve server's control socket, or Triton's restricted API with the key.
        """
        name = dep.spec.metadata.name
        load = runtime_of(dep.spec, self.platform).load_request(name, resolved, self._serving_context())
        await self._prepare(dep.spec, resolved)
        headers = {"Connection": "close", **self._control_headers, **load.headers}
        try:
            if load.grpc_metadata is not None and dep.endpoint.grpc:  # Triton: see runtime.local.triton_control
                from mlplane.runtime.local.triton_control import grpc_model_load

                r = await grpc_model_load(dep.endpoint.grpc, name, load.grpc_metadata, timeout=600.0)
            elif load.socket is not None:
                transport = httpx.AsyncHTTPTransport(uds=str(load.socket))
                async with httpx.AsyncClient(transport=transport) as control:
                    r = await control.post("http://model-control" + load.path, json=dict(load.body),
                                           timeout=600.0, headers=headers)
            else:
                r = await self._http.post(dep.endpoint.url + load.path, json=dict(load.body), timeout=600.0,
                                          headers=headers)
        except httpx.HTTPError as exc:
            r = None
            failure = f"model server for '{name}' did not answer the load: {exc}"
        if r is None or r.status_code != 200:
            if r is not None:
                failure = (f"model server for '{name}' refused version {resolved.version}: "
                           f"{error_text(r)}; still serving version {dep.resolved.version}")
            with contextlib.suppress(OperationError):  # a restart must come back on the served version
                await self._prepare(dep.spec, dep.resolved)
            raise OperationError(failure)
        dep.resolved = resolved
        dep.component.spec = self._model_process(dep.spec, resolved, dep.endpoint)
        dep.refresh_info()
        self.write_state()

    async def promote(self, name: str, version: str) -> dict[str, Any]:
        from mlplane import registry

        dep = self._get(name)
        ref = dep.spec.model_ref
        before = dep.resolved.version
        if ref.kind == "uri":
            raise OperationError(f"'{name}' serves a storage URI ({ref.uri}); promote needs a "
                                 "registry model (models:/NAME@ALIAS or models:/NAME/VERSION)", code=2)
        if ref.kind == "alias":
            # The alias moves first (deploy follows it), and moves back when the server refuses the version:
            # a refused promote leaves the registry as it was, and says so.
            aliased = (await self._resolve(dep.spec)).version
            try:
                await asyncio.to_thread(registry.set_alias, self.tracking_uri, ref.name, ref.alias, version)
            except registry.RegistryError as exc:
                raise OperationError(str(exc)) from None
            try:
                result = await self.deploy(dep.spec)
            except OperationError as exc:
                try:
                    await asyncio.to_thread(registry.set_alias, self.tracking_uri, ref.name, ref.alias, aliased)
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
        if name not in self.deployments and name in self.restore_errors:  # saved, but it could not be restored
            with contextlib.suppress(FileNotFoundError):
                (self.paths.deployments / f"{name}.yaml").unlink()
            del self.restore_errors[name]
            self.write_state()
            return {"name": name, "status": "removed"}
        dep = self._get(name)
        async with dep.lock:
            await asyncio.to_thread(self._stop_component, dep.component)
            del self.deployments[name], self.components[name]
        with contextlib.suppress(FileNotFoundError):
            (self.paths.deployments / f"{name}.yaml").unlink()
        workdir = runtime_of(dep.spec, self.platform).workdir(self.paths, name)
        if workdir is not None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        self.write_state()
        return {"name": name, "status": "removed"}

    def _get(self, name: str) -> Deployment:
        if name not in self.deployments:
            known = ", ".join(sorted(self.deployments)) or "none"
            raise OperationError(f"no deployment named '{name}' (deployed: {known})")
        return self.deployments[name]

    def _describe(self, dep: Deployment) -> dict[str, Any]:
        return {"name": dep.spec.metadata.name, **dep.component.to_state()}

    # ----------------------------------------------------------------- state and control
    def write_state(self, phase: str | None = None) -> None:
        if phase:
            self._phase = phase
        state = {
            "format": STATE_FORMAT,
            "phase": getattr(self, "_phase", "starting"),
            "stateDir": str(self.paths.root),
            "platform": self.platform.metadata.name,
            "error": getattr(self, "_error", None),
            "trackingUri": self.tracking_uri,
            "supervisor": {
                "pid": os.getpid(),
                "createTime": process.process_identity(os.getpid()),
                "socket": str(self.paths.socket),
                "startedAt": self.started_at,
                "log": str(self.paths.log_file("supervisor")),
            },
            "components": {n: {**c.to_state(), "specDigest": self._digest(c.spec)}
                           for n, c in self.components.items() if n not in self.deployments},
            "deployments": {n: {**self._describe(d), "specDigest": self._digest(d.component.spec)}
                            for n, d in self.deployments.items()},
            "restoreErrors": self.restore_errors,
            "warnings": self.warnings,
        }
        write_private(self.paths.state_file, json.dumps(state, indent=2))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await reader.readline())
            reply: dict[str, Any] = {"ok": True, "result": await self._dispatch(request)}
        except OperationError as exc:
            reply = {"ok": False, "error": str(exc), "code": exc.code}
        except SpecError as exc:
            reply = {"ok": False, "error": str(exc), "code": 2}
        except Exception as exc:  # never let one bad request take the supervisor down
            log.exception("request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "code": 1}
        with contextlib.suppress(ConnectionError):
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()

    async def _dispatch(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "deploy":
            from mlplane.spec import load_text

            (dep,) = load_text(request["yaml"], source=request.get("source", "<request>"))
            if not isinstance(dep, ModelDeployment):
                raise OperationError(f"expected a ModelDeployment, got {dep.kind}", code=2)
            return await self.deploy(dep)
        if op == "undeploy":
            return await self.undeploy(request["name"])
        if op == "promote":
            return await self.promote(request["name"], str(request["version"]))
        if op == "shutdown":
            self._stopping.set()
            return {"stopping": True}
        raise OperationError(f"unknown operation {op!r}")


def control_key(paths: StatePaths) -> str:
    """The platform's model-control secret: read from ``paths.control_key_file``, created (0600, in a 0700
    directory) on first use. It survives restarts, so model servers of an earlier session keep accepting it."""
    import secrets

    paths.control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(paths.control_dir, 0o700)
    with contextlib.suppress(FileNotFoundError):
        key = paths.control_key_file.read_text().strip()
        if key:
            os.chmod(paths.control_key_file, 0o600)
            return key
    key = secrets.token_urlsafe(32)
    fd = os.open(paths.control_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlplane-supervisor", description=__doc__)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    paths = StatePaths(Path(args.state_dir))
    os.umask(0o077)  # what the supervisor and its components create (mlflow.db, logs, artifacts) is the owner's
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness probe
    platform = Platform.default()
    if paths.platform_file.exists():
        (platform,) = load_file(paths.platform_file)
    sup = Supervisor(paths, platform)
    try:
        sup.acquire_lock()
    except OperationError as exc:
        log.error("%s", exc)
        return 3
    try:
        asyncio.run(sup.run())
    except OperationError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
