"""MLflow's basic auth as mlplane sets it up, without a server: the ASGI check, the credential files, the plan.

The server itself (the real `mlflow server --app-name mlplane-auth`) is exercised in tests/auth and
tests/charts; here: who gets through, what the files look like, what the process spec carries.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
from pathlib import Path

import httpx
import pytest

from mlplane.auth.mlflow import (
    MlflowAuthFiles,
    prepare_server_auth,
    read_credentials,
    shell_exports,
    use_platform_credentials,
)
from mlplane.auth.mlflow_app import AuthConfigError, BasicAuthApp, users_from_env
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import mlflow_process, process_environment

ADMIN_PW = "admin-password-123"
READER_PW = "reader-password-456"
WRITER_PW = "writer-password-789"


async def _echo(scope, receive, send) -> None:  # stands in for MLflow's app: says it was reached
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"reached MLflow"})


def _app() -> BasicAuthApp:
    users = users_from_env({"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PW,
                            "MLPLANE_MLFLOW_READER_USERNAME": "reader", "MLPLANE_MLFLOW_READER_PASSWORD": READER_PW,
                            "MLPLANE_MLFLOW_WRITER_USERNAME": "writer", "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER_PW})
    return BasicAuthApp(_echo, users)


def _call(method: str, path: str, auth: tuple[str, str] | None = None, headers: dict | None = None,
          ) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://mlflow") as client:
            return await client.request(method, path, auth=auth, headers=headers)
    return asyncio.run(go())


def test_without_credentials_every_api_call_is_refused_with_a_basic_challenge() -> None:
    for method, path in [("POST", "/api/2.0/mlflow/model-versions/create"),
                         ("POST", "/api/2.0/mlflow/registered-models/alias"),
                         ("GET", "/api/2.0/mlflow/registered-models/search"),
                         ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/model.tar.gz"),
                         ("GET", "/"), ("GET", "/health/../api/2.0/mlflow/experiments/search")]:
        r = _call(method, path)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == 'Basic realm="mlflow"'
        assert r.json()["error_code"] == "UNAUTHENTICATED" and "mlplane env" in r.json()["message"]
    assert _call("GET", "/health").text == "reached MLflow"  # probes need no credentials


def test_wrong_or_malformed_credentials_are_refused() -> None:
    assert _call("GET", "/api/2.0/mlflow/experiments/search", auth=("admin", "not-the-password")).status_code == 401
    assert _call("GET", "/api/2.0/mlflow/experiments/search", auth=("nobody", ADMIN_PW)).status_code == 401
    for header in ("Basic !!!not-base64", "Bearer " + ADMIN_PW, "Basic " + base64.b64encode(b"admin").decode()):
        assert _call("GET", "/api/2.0/mlflow/experiments/search", headers={"Authorization": header}).status_code == 401


def test_admin_reads_and_writes_reader_only_reads() -> None:
    assert _call("POST", "/api/2.0/mlflow/registered-models/alias", auth=("admin", ADMIN_PW)).status_code == 200
    assert _call("GET", "/api/2.0/mlflow-artifacts/artifacts/x.tar.gz", auth=("reader", READER_PW)).status_code == 200
    denied = _call("POST", "/api/2.0/mlflow/model-versions/create", auth=("reader", READER_PW))
    assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
    assert "may only read" in denied.json()["message"]


# What MLflow's client sends to log an ingestion run or a model (MLflow 3: logged models) and register it.
WRITER_MAY = [("POST", "/api/2.0/mlflow/experiments/create"), ("POST", "/api/2.0/mlflow/experiments/search"),
              ("POST", "/api/2.0/mlflow/runs/create"), ("POST", "/api/2.0/mlflow/runs/log-batch"),
              ("POST", "/api/2.0/mlflow/runs/set-tag"), ("POST", "/api/2.0/mlflow/runs/update"),
              ("POST", "/api/2.0/mlflow/runs/outputs"), ("POST", "/api/2.0/mlflow/logged-models"),
              ("POST", "/api/2.0/mlflow/logged-models/m-1a2b/params"),
              ("PATCH", "/api/2.0/mlflow/logged-models/m-1a2b"),
              ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/models/m-1a2b/artifacts/MLmodel"),
              ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts/model.bin"),
              ("POST", "/api/2.0/mlflow/registered-models/create"), ("POST", "/api/2.0/mlflow/model-versions/create"),
              ("POST", "/api/2.0/mlflow/registered-models/alias"), ("GET", "/api/2.0/mlflow/registered-models/alias"),
              ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.tar.gz")]
# The admin's: deletes, renames, stages, webhooks, gateway secrets, workspaces, and users and permissions
# (MLflow's basic-auth API paths: refused before they could ever reach a server that has them).
ADMIN_ONLY = [("DELETE", "/api/2.0/mlflow/registered-models/delete"),
              ("DELETE", "/api/2.0/mlflow/model-versions/delete"),
              ("DELETE", "/api/2.0/mlflow/registered-models/alias"), ("POST", "/api/2.0/mlflow/experiments/delete"),
              ("POST", "/api/2.0/mlflow/runs/delete"), ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/r/a"),
              ("DELETE", "/api/2.0/mlflow/logged-models/m-1a2b"), ("POST", "/api/2.0/mlflow/registered-models/rename"),
              ("POST", "/api/2.0/mlflow/model-versions/transition-stage"), ("POST", "/api/2.0/mlflow/webhooks"),
              ("POST", "/api/3.0/mlflow/gateway/secrets/create"), ("POST", "/api/3.0/mlflow/workspaces"),
              ("POST", "/api/2.0/mlflow/users/create"), ("PATCH", "/api/2.0/mlflow/users/update-admin"),
              ("DELETE", "/api/2.0/mlflow/users/delete"), ("POST", "/api/2.0/mlflow/experiments/permissions/create"),
              ("POST", "/api/2.0/mlflow/registered-models/permissions/create"), ("POST", "/graphql"),
              ("POST", "/api/2.0/mlflow/runs/create/extra"), ("POST", "/prefix/api/2.0/mlflow/runs/create")]


def test_the_writer_logs_and_registers_and_administers_nothing() -> None:
    for method, path in WRITER_MAY:
        r = _call(method, path, auth=("writer", WRITER_PW))
        assert (r.status_code, r.text) == (200, "reached MLflow"), (method, path)
    for method, path in ADMIN_ONLY:
        denied = _call(method, path, auth=("writer", WRITER_PW))
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED", (method, path)
        assert f"{method} {path} needs the admin user" in denied.json()["message"]
        assert _call(method, path, auth=("admin", ADMIN_PW)).status_code == 200, (method, path)
    # The reader still writes nothing the writer may.
    for method, path in WRITER_MAY:
        if method not in ("GET", "HEAD"):
            denied = _call(method, path, auth=("reader", READER_PW))
            assert denied.status_code == 403, (method, path)
            assert "needs the writer or the admin user" in denied.json()["message"]


def test_a_server_without_usable_credentials_does_not_start() -> None:
    with pytest.raises(AuthConfigError, match="MLFLOW_AUTH_ADMIN_PASSWORD"):
        users_from_env({"MLFLOW_AUTH_ADMIN_USERNAME": "admin"})
    with pytest.raises(AuthConfigError, match="at least 12"):
        users_from_env({"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "short"})
    with pytest.raises(AuthConfigError, match="MLPLANE_MLFLOW_READER_PASSWORD"):
        users_from_env({"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PW,
                        "MLPLANE_MLFLOW_READER_USERNAME": "reader"})
    admin = {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PW}
    with pytest.raises(AuthConfigError, match="MLPLANE_MLFLOW_WRITER_PASSWORD .*at least 12"):
        users_from_env({**admin, "MLPLANE_MLFLOW_WRITER_USERNAME": "writer", "MLPLANE_MLFLOW_WRITER_PASSWORD": "short"})
    with pytest.raises(AuthConfigError, match="MLPLANE_MLFLOW_WRITER_USERNAME must be set"):
        users_from_env({**admin, "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER_PW})
    with pytest.raises(AuthConfigError,
                       match="MLPLANE_MLFLOW_WRITER_USERNAME must differ from MLFLOW_AUTH_ADMIN_USERNAME"):
        users_from_env({**admin, "MLPLANE_MLFLOW_WRITER_USERNAME": "admin",
                        "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER_PW})
    with pytest.raises(AuthConfigError, match="MLPLANE_MLFLOW_READER_USERNAME must differ from MLPLANE_MLFLOW_WRITER"):
        users_from_env({**admin, "MLPLANE_MLFLOW_WRITER_USERNAME": "w", "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER_PW,
                        "MLPLANE_MLFLOW_READER_USERNAME": "w", "MLPLANE_MLFLOW_READER_PASSWORD": READER_PW})
    roles = {u.username: u.role for u in users_from_env({**admin, "MLPLANE_MLFLOW_WRITER_USERNAME": "w",
                                                          "MLPLANE_MLFLOW_WRITER_PASSWORD": WRITER_PW})}
    assert roles == {"admin": "admin", "w": "writer"}  # the reader is optional, and so is the writer


def test_credentials_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    files, creds = prepare_server_auth(tmp_path)
    assert len(creds.password) >= 32 and creds.password not in repr(creds)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    for f in (files.client_env, files.server_env):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert read_credentials(tmp_path) == creds
    assert prepare_server_auth(tmp_path)[1] == creds  # the next `up` keeps them
    files.client_env.unlink()  # rotation: delete the client file
    _, rotated = prepare_server_auth(tmp_path)
    assert rotated.password != creds.password
    assert f"MLFLOW_AUTH_ADMIN_PASSWORD={rotated.password}" in files.server_env.read_text()


def test_the_credentials_file_and_the_exports_are_what_shells_read(tmp_path: Path) -> None:
    _, creds = prepare_server_auth(tmp_path)
    env: dict[str, str] = {"MLFLOW_TRACKING_USERNAME": "someone-else", "MLFLOW_TRACKING_PASSWORD": "x"}
    assert use_platform_credentials(tmp_path, env) == creds
    assert env == {"MLFLOW_TRACKING_USERNAME": creds.username, "MLFLOW_TRACKING_PASSWORD": creds.password}
    assert use_platform_credentials(tmp_path / "no-platform", {}) is None
    sourced = os.popen(f"set -a; . {MlflowAuthFiles(tmp_path).client_env}; set +a; "
                       "echo \"$MLFLOW_TRACKING_USERNAME:$MLFLOW_TRACKING_PASSWORD\"").read().strip()
    assert sourced == f"{creds.username}:{creds.password}"
    exports = shell_exports({"MLFLOW_TRACKING_PASSWORD": "it's $secret"})
    assert os.popen(f"{exports}\necho \"$MLFLOW_TRACKING_PASSWORD\"").read().strip() == "it's $secret"


def test_mlflow_process_with_auth_names_the_app_and_keeps_secrets_out_of_the_spec(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    files, creds = prepare_server_auth(tmp_path)
    spec = mlflow_process(paths, "127.0.0.1", 5000, auth=files)
    assert spec.argv[-2:] == ("--app-name", "mlplane-auth")
    assert creds.password not in " ".join(spec.argv) + repr(spec.env)
    assert spec.env_files == (files.server_env,)
    env = process_environment(spec)  # read when the process starts
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == creds.username
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == creds.password
    plain = mlflow_process(paths, "127.0.0.1", 5000)
    assert "--app-name" not in plain.argv and plain.env_files == ()
