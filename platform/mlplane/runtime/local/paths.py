"""Where the local runtime keeps its state: ``.mlplane/`` of the working directory by default."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# AF_UNIX paths are limited to 108 bytes on Linux; keep a margin.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class StatePaths:
    """Every file the local runtime writes, derived from one state dir."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def previous_state_file(self) -> Path:
        """The state of a supervisor that is gone, kept by ``mlplane up`` for the next one to adopt from."""
        return self.root / "state.previous.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def deployments(self) -> Path:
        """Desired deployments, one YAML file each: restored by the next ``mlplane up``."""
        return self.root / "deployments"

    @property
    def ports_file(self) -> Path:
        """Ports handed out before: reused when free, so URLs stay the same across down/up."""
        return self.root / "ports.json"

    @property
    def platform_file(self) -> Path:
        return self.root / "platform.yaml"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def auth_keys_file(self) -> Path:
        """API keys (hashed), managed by ``mlplane keys``; read by model servers when auth is on."""
        return self.root / "auth" / "keys.json"

    @property
    def feast_dir(self) -> Path:
        """The local Feast repo: feature_store.yaml, registry, sqlite online store, parquet sources."""
        return self.root / "feast"

    @property
    def feature_store_yaml(self) -> Path:
        """The local Feast repo config, written by ``mlplane up`` (``mlplane.features.local``)."""
        return self.feast_dir / "feature_store.yaml"

    @property
    def milvus_dir(self) -> Path:
        """The Milvus Lite server's data directory (one server process owns it)."""
        return self.root / "milvus" / "data"

    def triton_dir(self, deployment: str) -> Path:
        """A triton deployment's model repository (``models/``) and backend directory (``backends/``)."""
        return self.root / "triton" / deployment

    @property
    def socket(self) -> Path:
        path = self.root / "supervisor.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mlplane-{digest}.sock"

    @property
    def control_dir(self) -> Path:
        """Model control (mode 0700): the model servers' control sockets and the Triton control key."""
        return self.root / "control"

    @property
    def control_key_file(self) -> Path:
        """The per-platform secret (0600) the supervisor sends on Triton's restricted model-repository API."""
        return self.control_dir / "model-control.key"

    def control_socket(self, deployment: str) -> Path:
        """A kserve model server's control socket: version swaps, reachable by the supervisor only."""
        path = self.control_dir / f"{deployment}.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        name = hashlib.sha1(deployment.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"mlplane-{digest}-control" / f"{name}.sock"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def ensure(self) -> None:
        """Create the state dirs (0700) and take group/other access from files earlier versions left open."""
        for d in (self.root, self.logs, self.deployments, self.mlflow_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for pattern in ("*.json", "*.yaml", "*.lock", "logs/*", "deployments/*", "mlflow/*.db"):
            for f in self.root.glob(pattern):
                with contextlib.suppress(OSError):
                    if f.is_file() and not f.is_symlink() and f.stat().st_mode & 0o077:
                        os.chmod(f, 0o600)


class StateFileError(Exception):
    """A state file that cannot be used; the message says what was wrong and where the file went."""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def quarantine(path: Path) -> Path:
    """Move a broken state file aside to ``<file>.corrupt-<timestamp>`` (kept for inspection) and return it."""
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
    os.replace(path, dest)
    return dest


def read_json_object(path: Path, *, move_aside: bool = True) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no file.

    A file that is not UTF-8, not JSON or not an object raises :class:`StateFileError` saying so; with
    ``move_aside`` it is first moved to ``<file>.corrupt-<timestamp>``, so the next start begins clean.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        problem = None if isinstance(data, dict) else f"holds a JSON {type(data).__name__}, not an object"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except (ValueError, RecursionError) as exc:
        problem = f"is not valid JSON ({str(exc)[:200]})"
    if problem is None:
        return data
    where = ""
    if move_aside:
        try:
            where = f"; moved it to {quarantine(path)}"
        except OSError as exc:
            where = f"; could not move it aside ({exc.strerror}): remove it"
    raise StateFileError(f"{path} {problem}{where}")
