"""The CLI's side of the local runtime: start the supervisor daemon, talk to it, read its state."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from mlplane.runtime.local import process
from mlplane.runtime.local.paths import StatePaths
from mlplane.spec import Platform, dump_yaml


class ControlError(Exception):
    """The platform refused or failed a request; ``code`` is the CLI exit code to use."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def read_state(paths: StatePaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def running_supervisor(paths: StatePaths) -> int | None:
    """The pid of the supervisor holding this state dir's lock, or None when none runs."""
    if not paths.lock_file.exists():
        return None
    fd = os.open(paths.lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(paths.lock_file.read_text().strip() or 0) or -1
        except ValueError:
            return -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def start_supervisor(paths: StatePaths, platform: Platform) -> subprocess.Popen[bytes]:
    """Write the platform spec into the state dir and start the supervisor daemon."""
    paths.ensure()
    paths.platform_file.write_text(dump_yaml([platform]))
    with contextlib.suppress(FileNotFoundError):
        paths.state_file.unlink()
    log = open(paths.log_file("supervisor"), "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mlplane.runtime.local.supervisor", "--state-dir", str(paths.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def request(paths: StatePaths, op: str, timeout: float = 900.0, **fields: Any) -> Any:
    """Send one request to the supervisor and return its result (raises ControlError)."""
    state = read_state(paths) or {}
    sock_path = state.get("supervisor", {}).get("socket") or str(paths.socket)
    if running_supervisor(paths) is None:
        raise ControlError(f"no platform is running on {paths.root}; start one with `mlplane up`")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"the supervisor on {paths.root} did not answer: {exc}") from None
    if not data:
        raise ControlError(f"the supervisor on {paths.root} closed the connection without answering")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"), int(reply.get("code", 1)))
    return reply.get("result")


def leftover_processes(state: dict[str, Any]) -> list[tuple[str, int, float | None]]:
    """Processes that the state file names and that are still running."""
    found = []
    entries = [("supervisor", state.get("supervisor") or {})]
    entries += list((state.get("components") or {}).items())
    entries += list((state.get("deployments") or {}).items())
    for name, entry in entries:
        pid, ctime = entry.get("pid"), entry.get("createTime")
        if pid and process.is_running(pid, ctime):
            found.append((name, int(pid), ctime))
    return found


def stop_platform(paths: StatePaths, timeout: float = 90.0) -> list[str]:
    """Stop the supervisor and all its components; kill any leftovers. Returns what was stopped."""
    state = read_state(paths) or {}
    pid = running_supervisor(paths)
    if pid:
        try:
            request(paths, "shutdown", timeout=10.0)
        except ControlError:
            if pid > 0:
                process.stop_tree(pid, grace_s=5.0)
        deadline = time.monotonic() + timeout
        while running_supervisor(paths) and time.monotonic() < deadline:
            time.sleep(0.2)
    stopped = []
    for name, leftover, ctime in leftover_processes(read_state(paths) or state):
        process.stop_tree(leftover, grace_s=5.0, create_time=ctime)
        stopped.append(name)
    return stopped
