"""The local supervisor: a daemon that runs the platform's components as supervised processes.

One supervisor per state dir (an exclusive ``flock`` on ``supervisor.lock``). It starts the platform's
components (:data:`~mlplane.runtime.local.platform_components.PLATFORM_COMPONENTS`: MLflow, Milvus Lite,
Feast), restores the deployments saved in the state dir (:class:`~mlplane.runtime.local.deployments.
DeploymentManager`, which plans each one with :func:`~mlplane.runtime.local.local_plan.plan_deployment`),
keeps every process running (:class:`~mlplane.runtime.local.runner.ComponentRunner`: restarts with one
backoff, adoption after a supervisor crash), follows registry aliases, writes ``state.json`` for
``mlplane status``/``logs`` from any shell, and answers the CLI over HTTP on a Unix socket
(:mod:`~mlplane.runtime.local.control_api`).
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
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from mlplane.auth import KeyStore
from mlplane.runtime.local import process
from mlplane.runtime.local.components import Component, OperationError
from mlplane.runtime.local.control_api import make_app, serve
from mlplane.runtime.local.deployments import DeploymentManager, PlatformState, describe
from mlplane.runtime.local.paths import StateFileError, StatePaths, quarantine, read_json_object, write_private
from mlplane.runtime.local.plan import ProcessSpec
from mlplane.runtime.local.platform_components import PLATFORM_COMPONENTS, PlatformComponent
from mlplane.runtime.local.runner import ComponentRunner
from mlplane.spec import ModelDeployment, Platform, load_file

log = logging.getLogger("mlplane.supervisor")

STATE_FORMAT = 1
MONITOR_INTERVAL_S = 0.5
ALIAS_SYNC_INTERVAL_S = 10.0
READINESS_INTERVAL_S = 2.0  # how often a ready deployment's model readiness is checked


class Supervisor:
    def __init__(self, paths: StatePaths, platform: Platform):
        self.paths = paths
        self.platform = platform
        self.host = platform.spec.serving.host
        self.state = PlatformState(platform, paths, vector_store_uri=platform.spec.vector_store.uri)
        self.started_at = time.time()
        self.phase = "starting"
        self.error: str | None = None  # why the platform failed to start
        self.warnings: list[str] = []  # state-file problems found at start, shown by `up` and `status`
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # restarts, alias syncs, readiness checks
        self._http = httpx.AsyncClient()
        self._lock_fd: int | None = None
        self._ports = self._read_ports()
        grace = float(platform.spec.serving.grace_period_seconds)
        self.runner = ComponentRunner(self._http, grace, self._read_previous(), self._digest, self.write_state)
        self.manager = DeploymentManager(self.state, self.runner, self._http, self._port, self.write_state)

    def _read_ports(self) -> dict[str, int]:
        try:
            ports: dict[str, Any] = read_json_object(self.paths.ports_file, move_aside=False) or {}
        except StateFileError as exc:
            why = str(exc)
        else:
            bad = [k for k, v in ports.items() if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536]
            if not bad:
                return ports
            why = f"{self.paths.ports_file} has entries that are not ports: {', '.join(sorted(bad))}"
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
        """A port for ``key``: the one it had last time when that one is still free, or held by a process this
        supervisor stops before it starts another (an earlier supervisor's, which it adopts or stops; the
        server of a deployment being replaced)."""
        preferred = self._ports.get(key)
        owner = key.split("/")[0]
        if preferred and (owner in self.runner.previous or owner in self.state.deployments):
            port = preferred
        else:
            port = process.free_port(self.host, preferred=preferred)
        self._ports[key] = port
        write_private(self.paths.ports_file, json.dumps(self._ports, indent=2, sort_keys=True))
        return port

    def _digest(self, spec: ProcessSpec) -> str:
        """What identifies a process's configuration (keyed with the platform's secret: the env may hold one)."""
        text = json.dumps([spec.kind, list(spec.argv), sorted(spec.env.items()), spec.ready_url, str(spec.log),
                           [str(f) for f in spec.env_files]])
        return hmac.new(self.state.control_key.encode(), text.encode(), hashlib.sha256).hexdigest()

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
        control = await serve(make_app(self), self.paths.socket)  # the CLI's way in: HTTP on a 0600 socket
        self.write_state("starting")
        try:
            try:
                await self._start_platform()
            except OperationError as exc:
                self.error = str(exc)
                raise
            await self.manager.restore()
            await asyncio.to_thread(self._stop_unadopted)
            self.write_state("running")
            monitor = asyncio.create_task(self._monitor())
            await self._stopping.wait()
            monitor.cancel()
            for task in list(self._tasks):
                task.cancel()
        finally:
            await control.stop()
            await self._shutdown()

    async def _start_platform(self) -> None:
        self.state.control_key = await asyncio.to_thread(control_key, self.paths)
        if self.platform.spec.auth.enabled:  # a fresh key each session: hashed in the key file, the key in memory
            key = await asyncio.to_thread(KeyStore(self.paths.auth_keys_file).issue_system_key)
            self.state.control_headers = {"Authorization": f"Bearer {key}"}
        if self.platform.spec.tracking.mode == "external":
            self.state.tracking_uri = str(self.platform.spec.tracking.uri)
        for component in PLATFORM_COMPONENTS:
            if component.enabled(self.platform):
                await self._start_component(component)

    async def _start_component(self, component: PlatformComponent) -> None:
        setup = await asyncio.to_thread(component.setup, self.paths, self.platform)
        port = component.fixed_port(self.platform) or self._port(component.name)
        url = f"http://{self.host}:{port}"
        spec = component.process(self.paths, self.platform, self.host, port, setup)
        comp = Component(spec=spec, info={"url": url, **component.info(self.paths, setup)})
        self.state.components[component.name] = comp
        if component.provides == "tracking":
            self.state.tracking_uri = url
        elif component.provides == "vectorStore":
            self.state.vector_store_uri = url
        await self.runner.start(comp)
        if comp.status != "ready":
            raise OperationError(f"{component.title} did not start: {comp.error}")

    def _stop_unadopted(self) -> None:
        self.runner.stop_unadopted()
        with contextlib.suppress(FileNotFoundError):
            self.paths.previous_state_file.unlink()

    async def _shutdown(self) -> None:
        self.write_state("stopping")
        deployments = self.state.deployments
        names = list(deployments) + [n for n in self.state.components if n not in deployments]
        for name in names:
            comp = self.state.components.get(name)
            if comp is not None:
                await asyncio.to_thread(self.runner.stop, comp)
        self.write_state("failed" if self.error else "stopped")
        await self._http.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run ``coro`` in a task of its own: a restart or a version switch can take minutes, and crashes must
        still be noticed meanwhile."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _monitor(self) -> None:
        next_sync = time.monotonic() + ALIAS_SYNC_INTERVAL_S
        next_readiness = time.monotonic() + READINESS_INTERVAL_S
        sync: asyncio.Task[None] | None = None
        readiness: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            now = time.monotonic()
            if not self.paths.state_file.exists():  # moved aside as corrupt (or deleted): `status` needs it back
                self.write_state()
            for name, comp in list(self.state.components.items()):
                if self.state.components.get(name) is not comp:  # undeployed or replaced meanwhile
                    continue
                try:
                    if self.runner.check(name, comp, now):
                        self._spawn(self._restart(name, comp))
                except Exception:  # one component's trouble must not stop the supervision of all
                    log.exception("supervising %s failed", name)
            if now >= next_sync and (sync is None or sync.done()):
                next_sync = now + ALIAS_SYNC_INTERVAL_S
                sync = self._spawn(self.manager.sync_aliases())
            if now >= next_readiness and (readiness is None or readiness.done()):
                # Alive is not enough: a server whose model was unloaded or failed answers health checks.
                next_readiness = now + READINESS_INTERVAL_S
                readiness = self._spawn(self.manager.check_models())

    async def _restart(self, name: str, comp: Component) -> None:
        dep = self.state.deployments.get(name)
        if dep is not None and dep.component is comp:
            await self.manager.restart(name, dep)
        else:
            await self.runner.restart(name, comp, alive=lambda: self.state.components.get(name) is comp)

    # ----------------------------------------------------------------- requests (the control API's operations)
    async def deploy(self, dep: ModelDeployment) -> dict[str, Any]:
        return await self.manager.deploy(dep)

    async def undeploy(self, name: str) -> dict[str, Any]:
        return await self.manager.undeploy(name)

    async def promote(self, name: str, version: str) -> dict[str, Any]:
        return await self.manager.promote(name, version)

    def request_shutdown(self) -> None:
        self._stopping.set()

    # ----------------------------------------------------------------- state and control
    def write_state(self, phase: str | None = None) -> None:
        if phase:
            self.phase = phase
        state = {
            "format": STATE_FORMAT,
            "phase": self.phase,
            "stateDir": str(self.paths.root),
            "platform": self.platform.metadata.name,
            "error": self.error,
            "trackingUri": self.state.tracking_uri,
            "supervisor": {
                "pid": os.getpid(),
                "createTime": process.process_identity(os.getpid()),
                "socket": str(self.paths.socket),
                "startedAt": self.started_at,
                "log": str(self.paths.log_file("supervisor")),
            },
            "components": {n: {**c.to_state(), "specDigest": self._digest(c.spec)}
                           for n, c in self.state.components.items() if n not in self.state.deployments},
            "deployments": {n: {**describe(d), "specDigest": self._digest(d.component.spec)}
                            for n, d in self.state.deployments.items()},
            "restoreErrors": self.state.restore_errors,
            "warnings": self.warnings,
        }
        write_private(self.paths.state_file, json.dumps(state, indent=2))

def control_key(paths: StatePaths) -> str:
    """The platform's model-control secret: read from ``paths.control_key_file``, created (0600, in a 0700
    directory) on first use. It survives restarts, so model servers of an earlier session keep accepting it."""
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
        (saved,) = load_file(paths.platform_file)
        if not isinstance(saved, Platform):  # `up` writes it; a hand-edited file may hold anything
            log.error("%s holds a %s, not a Platform; start the platform with `mlplane up -f FILE`",
                      paths.platform_file, saved.kind)
            return 2
        platform = saved
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
