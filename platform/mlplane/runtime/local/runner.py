"""The component runner: starts a supervised process and waits until it is ready, adopts the one an earlier
supervisor left running, stops it, notices its crash and restarts it after one backoff
(:meth:`mlplane.runtime.local.components.Component.back_off`).

It knows processes, not what they serve: the supervisor decides which components exist (platform
components and deployments), the runner keeps each one running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from mlplane.runtime.local import process
from mlplane.runtime.local.components import BACKOFF_INITIAL_S, HEALTHY_RESET_S, Component, probe, readiness
from mlplane.runtime.local.plan import ProcessSpec

log = logging.getLogger("mlplane.supervisor")

POLL_S = 0.2  # how often a starting process is checked for readiness


class ComponentRunner:
    """Runs components; ``changed`` is called whenever a component's state changed (the supervisor writes
    state.json), ``digest`` identifies a process's configuration (adoption needs an unchanged one)."""

    def __init__(self, http: httpx.AsyncClient, grace_s: float, previous: dict[str, dict[str, Any]],
                 digest: Callable[[ProcessSpec], str], changed: Callable[[], None]):
        self.http = http
        self.grace_s = grace_s
        # What a supervisor that is gone left running: adopted when healthy and unchanged, else stopped.
        self.previous = previous
        self.digest = digest
        self.changed = changed

    async def start(self, comp: Component) -> None:
        """Start ``comp`` (or adopt the earlier supervisor's process) and wait until it is ready or failed."""
        comp.status = "starting"
        comp.error = ""
        if await self.adopt(comp):
            return
        proc = comp.proc = process.spawn(comp.spec)
        spawned = time.monotonic()
        self.changed()
        deadline = time.monotonic() + comp.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                comp.status = "failed"
                comp.error = f"exited with code {proc.returncode}; see {comp.spec.log}"
                self.changed()
                return
            if await probe(self.http, comp.spec.ready_url):
                comp.status = "ready"
                comp.ready_since = time.monotonic()
                # Start to ready, as measured here: `mlplane render` defaults spec.coldStartSeconds to it.
                comp.info["coldStartSeconds"] = round(comp.ready_since - spawned, 2)
                self.changed()
                return
            await asyncio.sleep(POLL_S)
        comp.status = "failed"
        comp.error = f"not ready after {comp.spec.ready_timeout_s:.0f}s; see {comp.spec.log}"
        await asyncio.to_thread(self.stop, comp, "failed")
        self.changed()

    async def adopt(self, comp: Component) -> bool:
        """Take over the process an earlier supervisor ran for this component, when it still runs (same pid and
        start time), runs exactly what this one would start, and is ready: no restart, no failed request.
        Anything else it left under this name is stopped first, so the new process gets the ports."""
        entry = self.previous.pop(comp.spec.name, None)
        if entry is None:
            return False
        pid, ctime = entry["pid"], entry["createTime"]
        why = ""
        if entry.get("specDigest") != self.digest(comp.spec):
            why = "its configuration changed"
        elif not process.is_recorded_process(pid, ctime):
            why = "it is gone"
        elif not await self._ready_to_adopt(comp.spec.ready_url):
            why = "it is not ready"
        if why:
            log.info("%s: not adopting pid %s of the earlier supervisor (%s); starting a new one",
                     comp.spec.name, pid, why)
            await asyncio.to_thread(process.stop_tree, pid, self.grace_s, ctime)
            return False
        comp.proc = process.AdoptedProcess(pid, ctime)
        comp.status = "ready"
        comp.ready_since = time.monotonic()
        comp.restarts = int(entry.get("restarts") or 0)
        if "coldStartSeconds" in entry:
            comp.info["coldStartSeconds"] = entry["coldStartSeconds"]
        log.info("%s: adopted pid %s of the earlier supervisor (ready, unchanged)", comp.spec.name, pid)
        self.changed()
        return True

    async def _ready_to_adopt(self, url: str, attempts: int = 3) -> bool:
        """Ready, asked patiently: a server busy with requests may answer late, and adopting it beats a restart."""
        for _ in range(attempts):
            if url.startswith("tcp://"):
                ready, definite = await probe(self.http, url), True
            else:
                ready, detail = await readiness(self.http, url)
                definite = detail is not None
            if ready or definite:
                return ready
            await asyncio.sleep(1.0)
        return False

    def stop_unadopted(self) -> None:
        """Stop what the earlier supervisor left running and this one did not adopt (pid and start time checked)."""
        for name, entry in self.previous.items():
            log.info("stopping %s (pid %s) left by the earlier supervisor", name, entry["pid"])
            process.stop_tree(entry["pid"], grace_s=self.grace_s, create_time=entry["createTime"])
        self.previous.clear()

    def stop(self, comp: Component, status: str = "stopped") -> None:
        """Stop ``comp``'s process tree (blocking: run it in a worker thread from the event loop)."""
        comp.status = "stopping"  # the monitor must not take the exit for a crash and restart it
        if comp.proc is not None:
            adopted = comp.proc.create_time if isinstance(comp.proc, process.AdoptedProcess) else None
            process.stop_tree(comp.proc.pid, grace_s=self.grace_s, create_time=adopted)
        comp.status = status

    def check(self, name: str, comp: Component, now: float) -> bool:
        """Notice a crash (the component backs off) and say whether a restart is due now (the caller runs
        :meth:`restart` in a task of its own: readiness can take minutes)."""
        if comp.status == "ready" and comp.proc is not None and comp.proc.poll() is not None:
            exited = ("exited (adopted from an earlier supervisor: exit code unknown)"
                      if isinstance(comp.proc, process.AdoptedProcess) else f"exited with code {comp.proc.returncode}")
            log.warning("%s %s; restarting in %.0fs", name, exited, comp.backoff_s)
            process.kill_group_of_dead_leader(comp.proc.pid)  # e.g. model processes it had forked
            comp.error = exited
            comp.back_off(now)
            self.changed()
        elif comp.status == "restarting" and now >= comp.restart_at:
            comp.status = "starting"  # claimed: later passes leave it to the restart task
            return True
        elif comp.status == "ready" and now - comp.ready_since > HEALTHY_RESET_S:
            comp.backoff_s = BACKOFF_INITIAL_S
        return False

    async def restart(self, name: str, comp: Component, lock: asyncio.Lock | None = None,
                      alive: Callable[[], bool] = lambda: True) -> None:
        """Start ``comp`` again on its spec (under ``lock``); a failed start backs off again while ``alive()``
        (the component is still wanted)."""
        try:
            async with lock if lock is not None else contextlib.nullcontext():
                comp.restarts += 1
                await self.start(comp)
        except Exception:  # the component stays down; the next attempt follows its backoff
            log.exception("restarting %s failed", name)
        if comp.status != "ready" and alive():
            comp.back_off(time.monotonic())
            self.changed()
