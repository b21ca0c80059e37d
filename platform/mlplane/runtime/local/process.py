"""Thin executor for one OS process: start in its own process group, probe, stop the whole tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import closing
from typing import Any

import psutil

from mlplane.runtime.local.plan import ProcessSpec, process_environment


def free_port(host: str = "127.0.0.1", preferred: int | None = None) -> int:
    """``preferred`` if it is free on ``host`` right now, else a port the kernel picks."""
    for candidate in ((preferred, 0) if preferred else (0,)):
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port on {host}")


def spawn(spec: ProcessSpec) -> subprocess.Popen[bytes]:
    """Start ``spec`` in a new session (its own process group), output appended to its log."""
    spec.log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(spec.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # logs name paths, versions and errors: the owner's alone
    with open(fd, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(spec.argv),
            env=process_environment(spec),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def process_identity(pid: int) -> float | None:
    """The process's start time, used with the pid so a recycled pid is never mistaken for ours."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_running(pid: int | None, create_time: float | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie); with ``create_time``, only when it is the process started then."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def is_recorded_process(pid: Any, create_time: Any) -> bool:
    """Whether ``pid`` is still the very process recorded with ``create_time``: a pid without a recorded
    start time, or with another one (a recycled pid, an unrelated process), is never ours to signal."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
        return False
    if not isinstance(create_time, int | float) or isinstance(create_time, bool):
        return False
    return is_running(pid, float(create_time))


class AdoptedProcess:
    """A running process of an earlier supervisor, taken over by this one: ``Popen``'s ``pid``, ``poll()``
    and ``returncode``, checked by pid and start time (it is not our child, so its exit code is unknown)."""

    def __init__(self, pid: int, create_time: float):
        self.pid = pid
        self.create_time = create_time
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not is_running(self.pid, self.create_time):
            self.returncode = -1  # gone; not our child, so there is no status to collect
        return self.returncode


def stop_tree(pid: int, grace_s: float = 10.0, create_time: float | None = None) -> None:
    """SIGTERM the process group and every descendant, wait ``grace_s``, then SIGKILL what is left."""
    if not is_running(pid, create_time):
        if create_time is None:  # our own child died: what it left in its group goes too
            kill_group_of_dead_leader(pid)
        _reap(pid)
        return
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    _signal_group(pid, signal.SIGTERM)
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    if alive:
        _signal_group(pid, signal.SIGKILL)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    _reap(pid)


def kill_group_of_dead_leader(pid: int) -> None:
    """SIGKILL what is left of the process group of ``pid``, a leader that just died (its children:
    tritonserver's Python-backend stubs outlive a SIGKILLed server)."""
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # spawned with start_new_session: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
