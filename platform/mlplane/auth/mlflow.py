"""MLflow's authentication for a local platform with ``spec.auth.enabled``.

The supervisor runs MLflow behind HTTP basic auth (``mlflow server --app-name mlplane-auth``, see
:mod:`mlplane.auth.mlflow_app`): every call but ``/health`` needs the platform's user and password,
so no client can register a model or move an alias without them. Each platform gets its own
credentials, generated once and kept in the state dir (mode 0600, in a 0700 directory), never on a
command line, in a log or in ``state.json``:

- ``auth/mlflow.env``: ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, what every MLflow
  client reads. The supervisor, its model servers and Ray applications, and the ``mlplane`` CLI use
  it by themselves; a training script gets it with ``eval "$(mlplane env)"`` (or by sourcing the
  file: ``set -a; . .mlplane/auth/mlflow.env; set +a``), or in Python with
  :func:`use_platform_credentials`.
- ``auth/mlflow-server.env``: the same user as the MLflow server reads it
  (``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``), for the server process only.

Deleting ``auth/mlflow.env`` rotates the credentials at the next ``mlplane up``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shlex
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from mlplane.auth.mlflow_app import ADMIN_PASSWORD_ENV, ADMIN_USERNAME_ENV, APP_NAME
from mlplane.core.statedir import resolve_state_dir

__all__ = [
    "ADMIN_USERNAME",
    "APP_NAME",
    "PASSWORD_ENV",
    "USERNAME_ENV",
    "MlflowAuthFiles",
    "MlflowCredentials",
    "prepare_server_auth",
    "read_credentials",
    "shell_exports",
    "use_platform_credentials",
]

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
ADMIN_USERNAME = "mlplane-admin"


@dataclass(frozen=True)
class MlflowCredentials:
    """A user of MLflow's basic auth; the password never shows in ``repr`` (nor in logs)."""

    username: str
    password: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """What MLflow clients read (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``)."""
        return {USERNAME_ENV: self.username, PASSWORD_ENV: self.password}

    def authorization(self) -> str:
        """The ``Authorization`` header value (HTTP basic) for clients that are not MLflow's."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass(frozen=True)
class MlflowAuthFiles:
    """Where a platform keeps its MLflow credentials and auth config (under ``<state-dir>/auth``)."""

    root: Path  # the state dir

    @property
    def directory(self) -> Path:
        return self.root / "auth"

    @property
    def client_env(self) -> Path:
        """``MLFLOW_TRACKING_USERNAME=…`` / ``MLFLOW_TRACKING_PASSWORD=…`` (0600): what clients use."""
        return self.directory / "mlflow.env"

    @property
    def server_env(self) -> Path:
        """The same user as the MLflow server reads it (0600): for the server process only."""
        return self.directory / "mlflow-server.env"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically with mode 0600 (created so: never readable by others, not even briefly)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def _env_text(values: Mapping[str, str], comment: str) -> str:
    # Generated values are URL-safe base64 (no quotes, spaces or `$`): safe to source unquoted.
    return f"# {comment}\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env file (``export`` prefixes, comments and quotes allowed)."""
    return _parse_env(path.read_text())


def read_credentials(state_dir: Path) -> MlflowCredentials | None:
    """The platform's MLflow credentials, or None when it has none (auth off, or never started)."""
    try:
        env = read_env_file(MlflowAuthFiles(state_dir).client_env)
    except FileNotFoundError:
        return None
    if not env.get(USERNAME_ENV) or not env.get(PASSWORD_ENV):
        return None
    return MlflowCredentials(env[USERNAME_ENV], env[PASSWORD_ENV])


def prepare_server_auth(state_dir: Path) -> tuple[MlflowAuthFiles, MlflowCredentials]:
    """Make sure the platform has MLflow credentials; generated the first time, reused by every ``up``.

    Returns the files (the MLflow server reads ``server_env``) and the credentials (for the
    supervisor and its children).
    """
    files = MlflowAuthFiles(state_dir)
    creds = read_credentials(state_dir)
    if creds is None:
        creds = MlflowCredentials(ADMIN_USERNAME, secrets.token_urlsafe(32))
        _write_private(files.client_env, _env_text(
            creds.env(), "MLflow credentials of this mlplane platform: `eval \"$(mlplane env)\"` or "
            "`set -a; . THIS_FILE; set +a` before logging models. Keep it private."))
    wanted = {ADMIN_USERNAME_ENV: creds.username, ADMIN_PASSWORD_ENV: creds.password}
    try:
        current = read_env_file(files.server_env)
    except FileNotFoundError:
        current = {}
    if current != wanted:
        _write_private(files.server_env, _env_text(wanted, "For the MLflow server of this platform only."))
    return files, creds


def use_platform_credentials(state_dir: Path | None = None, environ: MutableMapping[str, str] | None = None,
                             ) -> MlflowCredentials | None:
    """Put the platform's MLflow credentials into the environment, for this process and its children.

    ``state_dir`` is resolved like ``--state-dir`` (``$MLPLANE_STATE_DIR``, else ``./.mlplane``). They
    replace MLflow credentials already in the environment, which belong to another server: call it
    only for the platform's own MLflow. Returns what was put in, or None when the platform has none
    (auth off).
    """
    target = os.environ if environ is None else environ
    creds = read_credentials(resolve_state_dir(state_dir))
    if creds is not None:
        target.update(creds.env())
    return creds


def shell_exports(values: Mapping[str, str]) -> str:
    """``export KEY='VALUE'`` lines for ``eval "$(mlplane env)"``."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
