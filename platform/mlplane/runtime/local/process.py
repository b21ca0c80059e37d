"""Thin executor for one OS process: start in its own process group, probe, stop the whole tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import closing

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
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log, "ab") as log:
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
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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
