"""What the supervisor keeps per process: the component's state, its readiness probe and prepared files.

Kept apart from :mod:`mlplane.runtime.local.supervisor`, which decides when processes start, restart
and stop; nothing here starts a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlplane.runtime.local import process
from mlplane.runtime.local.local_plan import LocalPlan
from mlplane.runtime.local.plan import Endpoint, ProcessSpec, ResolvedModel
from mlplane.runtime.local.runtimes import Prepared
from mlplane.spec import ModelDeployment

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0  # ready this long: the next crash restarts after BACKOFF_INITIAL_S again


class OperationError(Exception):
    """A request the supervisor refuses or could not carry out; the message goes to the user.

    ``code`` is the CLI's exit code (2: the request is wrong, 1: carrying it out failed); ``status`` the
    control API's HTTP status.
    """

    status = 409

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
        if code == 2:
            self.status = 400


class NotFound(OperationError):
    """The request names a deployment the platform does not have."""

    status = 404


@dataclass
class Component:
    """One supervised process and what the CLI needs to know about it."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | process.AdoptedProcess | None = None
    status: str = "pending"  # pending, starting, ready, reloading, restarting, failed, stopped
    restarts: int = 0
    reloads: int = 0  # times its model was found not ready in a running server and reloaded
    unready_checks: int = 0
    backoff_s: float = BACKOFF_INITIAL_S
    restart_at: float = 0.0
    ready_since: float = 0.0
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def back_off(self, now: float) -> None:
        """The next start attempt after the current backoff, which doubles per failure up to BACKOFF_MAX_S."""
        self.status = "restarting"
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)

    def to_state(self) -> dict[str, Any]:
        pid = self.proc.pid if self.proc else None
        return {
            "kind": self.spec.kind,
            "status": self.status,
            "pid": pid,
            "createTime": process.process_identity(pid) if pid else None,
            "restarts": self.restarts,
            "reloads": self.reloads,
            "log": str(self.spec.log),
            "error": self.error or None,
            **self.info,
        }


@dataclass
class Deployment:
    """A deployment being served: its spec, the version it serves and the plan its server runs."""

    spec: ModelDeployment
    resolved: ResolvedModel
    plan: LocalPlan
    component: Component
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def endpoint(self) -> Endpoint:
        return self.plan.endpoint

    @property
    def runtime(self) -> str:  # the effective runtime: spec.runtime, else the Platform's serving.defaultRuntime
        return self.plan.runtime

    def refresh_info(self) -> None:
        self.component.info.update({
            "runtime": self.runtime,
            "model": self.spec.spec.model,
            "modelUri": self.resolved.uri,
            "servedVersion": self.resolved.version or None,
            "url": self.endpoint.url,
            "grpc": self.endpoint.grpc,
        })
        if self.endpoint.metrics:
            self.component.info["metrics"] = self.endpoint.metrics


async def probe(client: httpx.AsyncClient, url: str) -> bool:
    if url.startswith("tcp://"):  # a server without HTTP (Milvus Lite's gRPC): accepting connections is ready
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout=2.0)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
    try:
        # No keep-alive: an idle pooled connection would hold a draining server (tritonserver waits for it).
        r = await client.get(url, timeout=2.0, headers={"Connection": "close"})
    except httpx.HTTPError:
        return False
    return r.status_code == 200


async def readiness(client: httpx.AsyncClient, url: str) -> tuple[bool, str | None]:
    """``(True, None)`` when ready; ``(False, why)`` on a definite "not ready" (an answer other than 200, a
    refused connection); ``(False, None)`` when no answer came in time (a busy server is not an unloaded one)."""
    try:
        r = await client.get(url, timeout=5.0, headers={"Connection": "close"})
    except httpx.TimeoutException:
        return False, None
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if r.status_code == 200:
        return True, None
    return False, f"HTTP {r.status_code}: {error_text(r)[:200]}"


def write_prepared(prepared: Prepared) -> None:
    """Write the files atomically; copy files only when changed (a running binary cannot be overwritten)."""
    for dest, text in prepared.files.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(dest)
    for dest, source in prepared.copies.items():
        src = source.stat()
        with contextlib.suppress(FileNotFoundError):
            have = dest.stat()
            if have.st_size == src.st_size and int(have.st_mtime) == int(src.st_mtime):
                continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copy2(source, tmp)
        tmp.replace(dest)


def error_text(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("error") or body.get("detail") or body)
    except ValueError:
        return r.text[:300]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return "last log lines:\n" + "\n".join("  " + line for line in text)
