"""The CLI's side of the local runtime: start the supervisor daemon, talk to it, read its state."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from mlplane.core.statedir import resolve_state_dir
from mlplane.runtime.local import process
from mlplane.runtime.local.paths import StateFileError, StatePaths, quarantine, read_json_object, write_private
from mlplane.runtime.local.plan import VECTOR_STORE_COMPONENT
from mlplane.spec import Platform, dump_yaml


class ControlError(Exception):
    """The platform refused or failed a request; ``code`` is the CLI exit code to use."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def read_state(paths: StatePaths, problems: list[str] | None = None, *, file: Path | None = None,
               ) -> dict[str, Any] | None:
    """The supervisor's ``state.json`` (or ``file``), None when there is none or it is unusable.

    An unusable file (not UTF-8, not JSON, not the shape the supervisor writes) is moved aside to
    ``<file>.corrupt-<timestamp>`` and the reason appended to ``problems``: never a traceback, and the
    next ``mlplane up`` starts clean.
    """
    path = file or paths.state_file
    try:
        state = read_json_object(path)
        if state is not None:
            _check_state_shape(path, state)
        return state
    except StateFileError as exc:
        if problems is not None:
            problems.append(str(exc))
        return None


def _check_state_shape(path: Path, state: dict[str, Any]) -> None:
    for key in ("supervisor", "components", "deployments", "restoreErrors"):
        if not isinstance(state.get(key) or {}, dict):
            break
    else:
        entries = [*(state.get("components") or {}).values(), *(state.get("deployments") or {}).values()]
        if all(isinstance(e, dict) for e in entries):
            return
    where = quarantine(path)
    raise StateFileError(f"{path} is not a state file mlplane wrote (unexpected structure); moved it to {where}")


def reset_state(paths: StatePaths) -> list[str]:
    """``mlplane up --reset-state``: move state.json (and the one kept for adoption) and ports.json aside.

    Saved deployments, MLflow's data and keys stay; processes a readable state file names (pid and start time
    checked) are stopped, not adopted.
    """
    moved = []
    for path in (paths.state_file, paths.previous_state_file):
        state = read_state(paths, file=path)
        for _name, pid, ctime in leftover_processes(state or {}):  # what it names and still runs: stopped
            process.stop_tree(pid, grace_s=5.0, create_time=ctime)
    for path in (paths.state_file, paths.previous_state_file, paths.ports_file):
        if path.exists():
            moved.append(f"{path.name} → {quarantine(path).name}")
    return moved


def running_supervisor(paths: StatePaths) -> int | None:
    """The pid of the supervisor holding this state dir's lock, or None when none runs."""
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(paths.lock_file.read_bytes().strip() or 0) or -1
        except ValueError:
            return -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def start_supervisor(paths: StatePaths, platform: Platform) -> subprocess.Popen[bytes]:
    """Write the platform spec into the state dir and start the supervisor daemon.

    The state of an earlier supervisor that is gone is kept as ``state.previous.json``: the new one adopts
    the processes it names that still run, are healthy and run what it would start (``mlplane up`` after
    a supervisor crash keeps the endpoints answering).
    """
    paths.ensure()
    write_private(paths.platform_file, dump_yaml([platform]))
    _keep_previous_state(paths)
    fd = os.open(paths.log_file("supervisor"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    log = os.fdopen(fd, "ab")  # handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mlplane.runtime.local.supervisor", "--state-dir", str(paths.root)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def _keep_previous_state(paths: StatePaths) -> None:
    """state.json → state.previous.json; one not yet taken over by a supervisor is merged, not overwritten."""
    current = read_state(paths)
    if current is None:
        return
    older = read_state(paths, file=paths.previous_state_file)
    if older is not None:
        for key in ("components", "deployments"):
            current[key] = {**(older.get(key) or {}), **(current.get(key) or {})}
    write_private(paths.previous_state_file, json.dumps(current, indent=2))
    paths.state_file.unlink()


# The control API (mlplane.runtime.local.control_api, served by the supervisor): each operation the CLI
# sends, as (method, path) with ``{name}`` from the request's fields.
_ROUTES: dict[str, tuple[str, str]] = {
    "ping": ("GET", "/v1/ping"),
    "deploy": ("PUT", "/v1/deployments/{name}"),
    "undeploy": ("DELETE", "/v1/deployments/{name}"),
    "promote": ("POST", "/v1/deployments/{name}/promote"),
    "shutdown": ("POST", "/v1/shutdown"),
}
_BASE_URL = "http://mlplane-supervisor"  # any host: the transport goes to the socket
_SOURCE_HEADER = "X-Mlplane-Source"  # control_api.SOURCE_HEADER (not imported: it pulls in uvicorn)


def request(paths: StatePaths, op: str, timeout: float = 900.0, **fields: Any) -> Any:
    """Send one request to the supervisor's control API and return its result (raises ControlError).

    ``op``: ``ping``; ``deploy`` with ``name``, ``yaml`` (that one ModelDeployment: the supervisor parses and
    checks it) and ``source`` (named in spec errors);
    ``undeploy`` with ``name``; ``promote`` with ``name`` and ``version``; ``shutdown``.
    """
    if op not in _ROUTES:
        raise ControlError(f"unknown operation {op!r}; expected one of {', '.join(_ROUTES)}", 2)
    method, route = _ROUTES[op]
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}
    name = str(fields.get("name", ""))
    if op == "deploy":
        text = str(fields["yaml"])
        source = str(fields.get("source") or "<request>")
        headers = {"Content-Type": "application/yaml", _SOURCE_HEADER: quote(source, safe="/:<>")}
        body = {"content": text.encode("utf-8")}
    elif op == "promote":
        body = {"json": {"version": str(fields["version"])}}
    url = route.format(name=quote(name, safe=""))
    state = read_state(paths) or {}
    sock_path = (state.get("supervisor") or {}).get("socket") or str(paths.socket)
    if running_supervisor(paths) is None:
        raise ControlError(f"no platform is running on {paths.root}; start one with `mlplane up`")
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=sock_path), base_url=_BASE_URL,
                          timeout=timeout) as client:
            reply = client.request(method, url, headers=headers, **body)
    except httpx.RemoteProtocolError:  # it crashed, or it is one an older mlplane started (another protocol)
        raise ControlError(f"the supervisor on {paths.root} closed the connection without answering; see "
                           "`mlplane logs supervisor`, and restart it with `mlplane down` and `mlplane up`") from None
    except httpx.HTTPError as exc:  # refused, no socket, timed out
        raise ControlError(f"the supervisor on {paths.root} did not answer: {exc}") from None
    try:
        result = reply.json()
    except ValueError:
        raise ControlError(f"the supervisor on {paths.root} sent a reply mlplane cannot read "
                           f"(HTTP {reply.status_code}): {reply.text[:200]!r}") from None
    if reply.is_error:
        error = result.get("error") if isinstance(result, dict) else None
        code = result.get("exitCode") if isinstance(result, dict) else None
        raise ControlError(str(error or f"HTTP {reply.status_code} from the supervisor on {paths.root}"),
                           code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else 1)
    return result


def leftover_processes(state: dict[str, Any]) -> list[tuple[str, int, float]]:
    """Processes that the state file names and that still run: the same pid *and* start time as recorded.

    A pid whose start time is missing or differs (a recycled pid, a hand-edited file) is someone else's.
    """
    found = []
    entries = [("supervisor", state.get("supervisor") or {})]
    entries += list((state.get("components") or {}).items())
    entries += list((state.get("deployments") or {}).items())
    for name, entry in entries:
        if not isinstance(entry, dict):
            continue
        pid, ctime = entry.get("pid"), entry.get("createTime")
        if process.is_recorded_process(pid, ctime):
            found.append((name, int(pid or 0), float(ctime or 0)))
    return found


def _is_our_supervisor(paths: StatePaths, pid: int, states: list[dict[str, Any]]) -> bool:
    """Whether ``pid`` (the lock file's) is this state dir's supervisor, by recorded start time or command line."""
    for state in states:
        sup = state.get("supervisor") or {}
        if sup.get("pid") == pid and process.is_recorded_process(pid, sup.get("createTime")):
            return True
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return "mlplane.runtime.local.supervisor" in cmdline and str(paths.root) in cmdline


def stop_platform(paths: StatePaths, timeout: float = 90.0, problems: list[str] | None = None) -> list[str]:
    """Stop the supervisor and all its components; stop any leftovers. Returns what was stopped.

    Only processes whose pid and start time match what the state files recorded are signalled.
    """
    states = [s for f in (paths.state_file, paths.previous_state_file)
              if (s := read_state(paths, problems, file=f)) is not None]
    pid = running_supervisor(paths)
    if pid:
        try:
            request(paths, "shutdown", timeout=10.0)
        except ControlError:
            if pid > 0 and _is_our_supervisor(paths, pid, states):
                process.stop_tree(pid, grace_s=5.0, create_time=process.process_identity(pid))
        deadline = time.monotonic() + timeout
        while running_supervisor(paths) and time.monotonic() < deadline:
            time.sleep(0.2)
    final = read_state(paths, problems)
    stopped = []
    seen = set()
    for state in ([final] if final is not None else []) + states:
        for name, leftover, ctime in leftover_processes(state):
            if (leftover, ctime) in seen:
                continue
            seen.add((leftover, ctime))
            process.stop_tree(leftover, grace_s=5.0, create_time=ctime)
            stopped.append(name)
    with contextlib.suppress(FileNotFoundError):
        paths.previous_state_file.unlink()
    return stopped


def vector_store_uri(state_dir: str | Path | None = None, platform: Platform | None = None) -> str:
    """Where the platform's Milvus answers.

    ``spec.vectorStore.backend: milvus`` (the cluster, or any Milvus server): its ``uri``. Otherwise
    the Milvus Lite server of the local platform running on ``state_dir`` (read from its state file).
    """
    from mlplane.rag.store import VectorStoreError  # needs pymilvus, the `vector` extra

    if platform is not None and platform.spec.vector_store.backend == "milvus":
        if not platform.spec.vector_store.uri:
            raise VectorStoreError(f"Platform '{platform.metadata.name}': spec.vectorStore.uri is required "
                                   "with backend 'milvus'")
        return platform.spec.vector_store.uri
    paths = StatePaths(resolve_state_dir(state_dir))
    state = read_state(paths) or {}
    component = (state.get("components") or {}).get(VECTOR_STORE_COMPONENT) or {}
    if state.get("phase") != "running" or not component.get("url"):
        raise VectorStoreError(
            f"no vector store is running on {paths.root}: start a platform with spec.vectorStore.enabled: true "
            "(`mlplane up -f platform.yaml`), or give a Platform with backend 'milvus' and its uri")
    return str(component["url"])
