"""Which directory holds a local platform's state: the one rule the CLI, the supervisor and the clients share."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "MLPLANE_STATE_DIR"
DEFAULT_STATE_DIR = ".mlplane"


def resolve_state_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """The state dir: the ``--state-dir`` flag, else ``$MLPLANE_STATE_DIR``, else ``./.mlplane``."""
    raw = flag or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(raw).expanduser().resolve()
