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
from mlplane.runtime.local import process
from mlplane.runtime.local.components import (
    BACKOFF_INITIAL_S,
    Component,
    Deployment,
    OperationError,
    error_text,
    log_tail,
    probe,
    write_prepared,
)
from mlplane.runtime.local.paths import StatePaths
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
from mlplane.runtime.local.runtimes import ServingContext, UnsupportedRuntime, runtime_for
from mlplane.spec import ModelDeployment, Platform, SpecError, dump_yaml, load_file

log = logging.getLogger("mlplane.supervisor")

STATE_FORMAT = 1
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0
MONITOR_INTERVAL_S = 0.5
ALIAS_SYNC_INTERVAL_S = 10.0


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
        self._http = httpx.AsyncClient()
        self._control_headers: dict[str, str] = {}  # with auth on: the supervisor's key, for version switches
        self._control_key = ""  # the per-platform model-control secret (Triton's restricted API), never logged
        self._lock_fd: int | None = None
        try:
            self._ports: dict[str, int] = json.loads(paths.ports_file.read_text())
        except (FileNotFoundError, ValueError):
            self._ports = {}

    def _port(self, key: str) -> int:
        """A port for ``key``: the one it had last time when that one is still free."""
        port = process.free_port(self.host, preferred=self._ports.get(key))
        self._ports[key] = port
        self.paths.ports_file.write_text(json.dumps(self._ports, indent=2, sort_keys=True))
        return port

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
            self.write_state("running")
            monitor = asyncio.create_task(self._monitor())
            await self._stopping.wait()
            monitor.cancel()
            for task in list(self._restarts):
                task.cancel()
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
        spec = mlflow_process(self.paths, self.host, port, tracking.backend_store_uri,
                              tracking.artifacts_destination)
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
                log.error("could not restore deployment from %s: %s", file, exc)
                self.restore_errors[file.stem] = str(exc).splitlines()[0]

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

    def _stop_component(self, comp: Component, status: str = "stopped") -> None:
        comp.status = "stopping"  # the monitor must not take the exit for a crash and restart it
        if comp.proc is not None:
            grace = float(self.platform.spec.serving.grace_period_seconds)
            process.stop_tree(comp.proc.pid, grace_s=grace)
        comp.status = status

    async def _monitor(self) -> None:
        next_sync = time.monotonic() + ALIAS_SYNC_INTERVAL_S
        sync: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            now = time.monotonic()
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

    async def _supervise(self, name: str, comp: Component, now: float) -> None:
        if comp.status == "ready" and comp.proc is not None and comp.proc.poll() is not None:
            code = comp.proc.returncode
            log.warning("%s exited with code %s; restarting in %.0fs", name, code, comp.backoff_s)
            process.kill_group_of_dead_leader(comp.proc.pid)  # e.g. model processes it had forked
            comp.status = "restarting"
            comp.error = f"exited with code {code}"
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
                resolved = await self._resolve(dep.spec)
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
                              control_key=self._control_key)

    def _model_process(self, dep: ModelDeployment, resolved: ResolvedModel, endpoint: Endpoint) -> ProcessSpec:
        spec = runtime_for(dep.spec.runtime).process(self._serving_context(), dep.metadata.name, resolved, endpoint)
        if dep.spec.features is not None:
            from mlplane.features.local import features_json

            spec = with_features(spec, features_json(dep), self.paths.feature_store_yaml)
        return spec

    async def _prepare(self, dep: ModelDeployment, resolved: ResolvedModel) -> None:
        """Write what the runtime needs on disk for ``resolved`` (triton: its model repository)."""
        from mlplane import registry

        runtime = runtime_for(dep.spec.runtime)
        signature = None
        if runtime.needs_signature:
            try:
                signature = await asyncio.to_thread(registry.signature, self.tracking_uri, resolved.uri)
            except registry.RegistryError as exc:
                raise OperationError(str(exc)) from None
        try:
            prepared = runtime.prepare(self._serving_context(), dep, resolved, signature)
        except ValueError as exc:  # a signature the runtime cannot express, a missing binary
            raise OperationError(f"deployment '{dep.metadata.name}': {exc}", code=2) from None
        await asyncio.to_thread(write_prepared, prepared)

    async def _resolve(self, dep: ModelDeployment) -> ResolvedModel:
        from mlplane import registry

        try:
            return await asyncio.to_thread(registry.resolve, self.tracking_uri, dep.model_ref)
        except registry.RegistryError as exc:
            raise OperationError(str(exc)) from None
        except Exception as exc:  # the registry itself is unreachable or broken
            raise OperationError(f"MLflow at {self.tracking_uri} did not answer: {exc}") from None

    async def deploy(self, dep: ModelDeployment, persist: bool = True) -> dict[str, Any]:
        name = dep.metadata.name
        if name in RESERVED_NAMES:
            raise OperationError(f"metadata.name: '{name}' is reserved; choose another name", code=2)
        try:
            runtime = runtime_for(dep.spec.runtime)
        except UnsupportedRuntime as exc:
            raise OperationError(str(exc), code=2) from None
        if dep.spec.features is not None:  # unknown features are refused before anything starts
            from mlplane.features.local import FeatureLookupError, check_deployment

            try:
                await asyncio.to_thread(check_deployment, self.platform, self.paths.feast_dir, dep)
            except FeatureLookupError as exc:
                raise OperationError(f"deployment '{name}': {exc}", code=2) from None
        resolved = await self._resolve(dep)
        current = self.deployments.get(name)
        # Only the model changed: switch inside the running server. Anything else: a new server.
        in_place = current is not None and (current.spec.spec.model_dump(exclude={"model"})
                                            == dep.spec.model_dump(exclude={"model"}))
        if in_place and current.component.status in ("ready", "restarting", "starting"):
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
            current = Deployment(spec=dep, resolved=resolved, endpoint=endpoint, component=comp)
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
        load = runtime_for(dep.spec.spec.runtime).load_request(name, resolved, self._serving_context())
        await self._prepare(dep.spec, resolved)
        headers = {"Connection": "close", **self._control_headers, **load.headers}
        try:
            if load.socket is not None:
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
            try:
                await asyncio.to_thread(registry.set_alias, self.tracking_uri, ref.name, ref.alias, version)
            except registry.RegistryError as exc:
                raise OperationError(str(exc)) from None
            new_spec = dep.spec
        else:
            new_spec = dep.spec.model_copy(deep=True)
            new_spec.spec.model = f"models:/{ref.name}/{version}"
        result = await self.deploy(new_spec)
        result["previousVersion"] = before
        return result

    async def undeploy(self, name: str) -> dict[str, Any]:
        dep = self._get(name)
        async with dep.lock:
            await asyncio.to_thread(self._stop_component, dep.component)
            del self.deployments[name], self.components[name]
        with contextlib.suppress(FileNotFoundError):
            (self.paths.deployments / f"{name}.yaml").unlink()
        workdir = runtime_for(dep.spec.spec.runtime).workdir(self.paths, name)
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
            "components": {n: c.to_state() for n, c in self.components.items() if n not in self.deployments},
            "deployments": {n: self._describe(d) for n, d in self.deployments.items()},
            "restoreErrors": self.restore_errors,
        }
        tmp = self.paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.paths.state_file)

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
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
