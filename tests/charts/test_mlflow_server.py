"""The chart's MLflow, run for real: the exact command, arguments and environment the chart renders.

The real Helm engine renders charts/mlplane; the MLflow container's command, args and env are resolved
the way the kubelet does (`$(VAR)` from the container's env, secretKeyRef from the rendered Secret or one
the test provides) and the MLflow server of .venv is started with them. Rewritten, because a pod has them
and a test machine does not: `--host` (0.0.0.0 -> 127.0.0.1) and `--port` (a free loopback port), the
pod's volume paths `/mlflow/db`, `/mlflow/artifacts` and `HOME=/tmp` (temp dirs), and the production
database host/port, which come from the values the test sets (a throwaway PostgreSQL on loopback).
Added: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (no job runner in a test), and for the S3 path the
endpoint and dummy credentials of a moto S3 server on loopback (IRSA provides credentials in EKS).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
import requests
from chart_helpers import NAMESPACE, Obj, find, objects, render, scenario_values
from moto.server import ThreadedMotoServer

SVC = "mlplane-mlflow"
INGRESS_HOST = "mlflow.example.com"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_PASSWORD = "s3cret-Pa55"
BUCKET = "mlplane-mlflow-artifacts-123456789012"
IN_CLUSTER_HOSTS = [f"{SVC}.{NAMESPACE}.svc:5000", f"{SVC}.{NAMESPACE}.svc.cluster.local:5000",
                    f"{SVC}:5000", f"{SVC}.{NAMESPACE}"]


# --------------------------------------------------------------------------- the kubelet's part
def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, anything else stays."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def _secret_data(secret: Obj) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


def container_process(objs: list[Obj], secrets: list[Obj], deployment: str = SVC, name: str = "mlflow",
                      ) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the MLflow container (or another), as the kubelet would start it."""
    pod = find(objs, "Deployment", deployment)["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    by_name = {s["metadata"]["name"]: _secret_data(s) for s in secrets}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] in by_name, f"env {var['name']} needs Secret {ref['name']}, which nobody provides"
            if ref.get("optional") and ref["key"] not in by_name[ref["name"]]:
                continue  # the kubelet leaves an optional key that is missing unset
            env[var["name"]] = by_name[ref["name"]][ref["key"]]
    argv = [_expand(a, env) for a in container["command"] + container.get("args", [])]
    return argv, env


# --------------------------------------------------------------------------- running it
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(argv: list[str], env: dict[str, str], tmp: Path, extra_env: dict[str, str] | None = None,
                  ) -> Iterator[str]:
    port = _free_port()
    (tmp / "db").mkdir()
    (tmp / "artifacts").mkdir()
    rewrites = {"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={port}"}
    assert argv[:2] == ["mlflow", "server"]
    args = [rewrites.get(a, a).replace("/mlflow/db/", f"{tmp}/db/").replace("=/mlflow/artifacts", f"={tmp}/artifacts")
            for a in argv[2:]]
    assert f"--port={port}" in args and "--host=127.0.0.1" in args, argv
    assert env.get("HOME") == "/tmp"
    proc_env = {"PATH": os.environ["PATH"], **env, "HOME": str(tmp), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                **(extra_env or {})}
    log = (tmp / "mlflow.log").open("wb")
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow_bin, "server", *args], env=proc_env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{(tmp / 'mlflow.log').read_text()[-4000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not ready:\n{(tmp / 'mlflow.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _api(url: str, host: str, method: str, path: str, body: Obj | None = None, origin: str | None = None,
         ) -> requests.Response:
    headers = {"Host": host, **({"Origin": origin} if origin else {})}
    return requests.request(method, f"{url}/api/2.0/mlflow/{path}", json=body, headers=headers, timeout=30)


def _check_hosts(url: str, model: str) -> Obj:
    """In-cluster and ingress Host headers: 200; a foreign one: 403. Returns the registered model."""
    for host in [*IN_CLUSTER_HOSTS, INGRESS_HOST]:
        r = _api(url, host, "GET", "experiments/search?max_results=5")
        assert r.status_code == 200, (host, r.status_code, r.text)
    # kubectl port-forward (Host: localhost:<port>) still works: MLflow's own defaults are kept.
    assert _api(url, "localhost:5000", "GET", "experiments/search?max_results=5").status_code == 200
    refused = _api(url, "evil.example.net", "GET", "experiments/search?max_results=5")
    assert refused.status_code == 403 and "Invalid Host header" in refused.text
    created = _api(url, f"{SVC}.{NAMESPACE}.svc:5000", "POST", "registered-models/create", {"name": model})
    assert created.status_code == 200, created.text
    got = _api(url, f"{SVC}.{NAMESPACE}.svc.cluster.local:5000", "GET", f"registered-models/get?name={model}")
    assert got.status_code == 200 and got.json()["registered_model"]["name"] == model
    return got.json()["registered_model"]


# --------------------------------------------------------------------------- default values (sqlite + PVC)
def test_default_mlflow_answers_in_cluster_and_ingress_hosts(tmp_path: Path) -> None:
    values = {"mlflow": {"allowedHosts": [INGRESS_HOST]}}
    objs = objects(render(values))
    argv, env = container_process(objs, [])
    with mlflow_server(argv, env, tmp_path) as url:
        _check_hosts(url, "fraud")
        # The UI behind the ingress may change state (its browser sends Origin); other sites may not.
        ui = _api(url, INGRESS_HOST, "POST", "experiments/create", {"name": "from-ui"},
                  origin=f"https://{INGRESS_HOST}")
        assert ui.status_code == 200, ui.text
        cross = _api(url, INGRESS_HOST, "POST", "experiments/create", {"name": "evil"},
                     origin="https://evil.example.net")
        assert cross.status_code == 403
        # Proxied artifacts land on the PVC path the chart mounts.
        exp = _api(url, f"{SVC}.{NAMESPACE}.svc:5000", "GET", "experiments/get-by-name?experiment_name=from-ui")
        assert exp.json()["experiment"]["artifact_location"].startswith("mlflow-artifacts:/")


# --------------------------------------------------------------------------- production (PostgreSQL + S3)
@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A throwaway PostgreSQL on loopback with TLS (self-signed) and password auth, owner `mlflow`.

    Started with Debian's initdb/pg_ctl directly (pytest-postgresql's executor refuses to run when the
    tests run as root, as on these machines: PostgreSQL then runs as `nobody`).
    """
    if not (PG_BIN / "pg_ctl").is_file():
        pytest.fail(f"PostgreSQL not found: looked for {PG_BIN / 'pg_ctl'} (Debian package postgresql; "
                    "`make system-deps`)")
    as_user: dict[str, Any] = {"user": "nobody", "group": "nogroup"} if os.geteuid() == 0 else {}
    tmp = Path(tempfile.mkdtemp(prefix="mlplane-pg-"))
    key, cert, pwfile, data = tmp / "server.key", tmp / "server.crt", tmp / "pw", tmp / "data"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pwfile.write_text(DB_PASSWORD)
    for path in (tmp, key, cert, pwfile):
        path.chmod(0o700 if path == tmp else 0o600)
        if as_user:
            shutil.chown(path, "nobody", "nogroup")
    port = _free_port()
    run = functools.partial(subprocess.run, check=True, capture_output=True, cwd=tmp, **as_user)
    try:
        run([PG_BIN / "initdb", "-D", data, "-U", "mlflow", "--auth=scram-sha-256", f"--pwfile={pwfile}"])
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={tmp} -c ssl=on "
                f"-c ssl_cert_file={cert} -c ssl_key_file={key}")
        run([PG_BIN / "pg_ctl", "start", "-w", "-D", data, "-l", tmp / "pg.log", "-o", opts])
        try:
            with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", password=DB_PASSWORD,
                                                     dbname="postgres", sslmode="require")) as conn:
                conn.autocommit = True
                conn.cursor().execute("CREATE DATABASE mlflow")
            yield port
        finally:
            run([PG_BIN / "pg_ctl", "stop", "-w", "-m", "fast", "-D", data])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _production_values(pg_port: int) -> Obj:
    values = scenario_values("production")
    backend = values["mlflow"]["backendStore"]
    backend.update(host="127.0.0.1", port=pg_port, password=DB_PASSWORD)
    del backend["passwordSecretArn"]
    values["mlflow"]["allowedHosts"] = [INGRESS_HOST]
    return values


def test_production_mlflow_on_postgresql_and_s3(postgres: int, tmp_path: Path) -> None:
    pg_port = postgres
    objs = objects(render(_production_values(pg_port)))
    secrets = [o for o in objs if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == ["mlplane-mlflow-db"]
    assert all(DB_PASSWORD not in str(o) for o in objs if o["kind"] in ("ConfigMap", "Deployment"))
    argv, env = container_process(objs, secrets)
    # The password reaches libpq only as PGPASSWORD, with the rendered sslmode (require: TLS is used).
    assert env["PGPASSWORD"] == DB_PASSWORD and env["PGSSLMODE"] == "require"
    assert f"--backend-store-uri=postgresql://mlflow@127.0.0.1:{pg_port}/mlflow" in argv
    assert DB_PASSWORD not in " ".join(argv)

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    moto.start()
    try:
        s3_url = f"http://127.0.0.1:{moto._server.server_port}"
        s3_env = {"MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        with mlflow_server(argv, env, tmp_path, s3_env) as url:
            model = _check_hosts(url, "churn")
            exp = _api(url, f"{SVC}.{NAMESPACE}.svc:5000", "POST", "experiments/create", {"name": "prod"})
            assert exp.status_code == 200, exp.text
            got = _api(url, f"{SVC}.{NAMESPACE}.svc:5000", "GET",
                       f"experiments/get?experiment_id={exp.json()['experiment_id']}")
            location = got.json()["experiment"]["artifact_location"]
            assert location.startswith(f"s3://{BUCKET}/")
            # A client in the cluster writes the model straight to the bucket, then registers it.
            _log_and_register(url, exp.json()["experiment_id"], model["name"], s3_env, tmp_path)
            # MLflow's own connections (password from PGPASSWORD, sslmode from PGSSLMODE) are TLS.
            with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=pg_port, user="mlflow",
                                                     password=DB_PASSWORD, dbname="postgres")) as conn:
                cur = conn.cursor()
                cur.execute("SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                            "WHERE a.datname = 'mlflow'")
                count, all_tls = cur.fetchone()
                assert count >= 1 and all_tls, (count, all_tls)
        # Persisted in PostgreSQL (not a local file): the rows are there after the server is gone.
        with contextlib.closing(psycopg2.connect(host="127.0.0.1", port=pg_port, user="mlflow", password=DB_PASSWORD,
                                                 dbname="mlflow", sslmode="require")) as conn:
            cur = conn.cursor()
            cur.execute("SELECT name, version, source FROM model_versions")
            ((name, version, source),) = cur.fetchall()
            assert (name, version) == ("churn", 1) and source.startswith(f"s3://{BUCKET}/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        assert any(k.endswith("model/weights.txt") for k in keys), keys
    finally:
        moto.stop()


def _log_and_register(url: str, experiment_id: str, name: str, s3_env: dict[str, str], tmp: Path) -> None:
    script = (
        "import mlflow, sys\n"
        "c = mlflow.MlflowClient(sys.argv[1])\n"
        "run = c.create_run(sys.argv[2])\n"
        "open('weights.txt', 'w').write('42')\n"
        "c.log_artifact(run.info.run_id, 'weights.txt', 'model')\n"
        "c.create_model_version(sys.argv[3], run.info.artifact_uri + '/model', run.info.run_id)\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), **s3_env}
    done = subprocess.run([sys.executable, "-c", script, url, experiment_id, name], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]


# --------------------------------------------------------------------------- the database Secret
def test_existing_secret_is_honoured_and_no_secret_rendered() -> None:
    values = scenario_values("production")
    values["mlflow"]["backendStore"].update(existingSecret="rds-mlflow", existingSecretPasswordKey="pw")
    objs = objects(render(values))
    assert [o for o in objs if o["kind"] == "Secret"] == []
    argv, env = container_process(objs, [{"metadata": {"name": "rds-mlflow"}, "stringData": {"pw": "from-eso"}}])
    assert env["PGPASSWORD"] == "from-eso"


def test_production_scenario_reads_the_default_secret_name() -> None:
    # Terraform's layout names no password: the Secret `<fullname>-mlflow-db` (key `password`) must be synced.
    objs = objects(render(scenario_values("production")))
    assert [o for o in objs if o["kind"] == "Secret"] == []
    with pytest.raises(AssertionError, match="needs Secret mlplane-mlflow-db"):
        container_process(objs, [])


@pytest.mark.parametrize(("values", "message"), [
    ({"backendStore": {"type": "postgresql", "host": "db", "password": "x", "existingSecret": "s"}},
     "password and mlflow.backendStore.existingSecret are both set"),
    ({"backendStore": {"password": "x"}}, "mlflow.backendStore.password is set but mlflow.backendStore.type"),
])
def test_ambiguous_password_settings_are_refused(values: Obj, message: str) -> None:
    with pytest.raises(Exception, match=re.escape(message)):
        render({"mlflow": values})


# --------------------------------------------------------------------------- MLflow behind basic auth
ADMIN_PW, WRITER_PW, READER_PW = "admin-Pa55word-1", "writer-Pa55word-3", "reader-Pa55word-2"


def test_mlflow_with_auth_refuses_anonymous_writes_and_serves_the_chart_users(tmp_path: Path) -> None:
    values = {"mlflow": {"auth": {"enabled": True, "adminPassword": ADMIN_PW, "writerPassword": WRITER_PW,
                                  "readerPassword": READER_PW}}}
    objs = objects(render(values))
    secrets = [o for o in objs if o["kind"] == "Secret"]
    assert {(s["metadata"]["name"], s["metadata"]["namespace"]) for s in secrets} == {
        ("mlplane-mlflow-auth", NAMESPACE), ("mlplane-mlflow-storage", NAMESPACE),
        ("mlplane-mlflow-reader", NAMESPACE), ("mlplane-mlflow-writer", NAMESPACE)}  # the pods' users
    assert all(ADMIN_PW not in str(o) for o in objs if o["kind"] != "Secret")
    argv, env = container_process(objs, secrets)
    assert "--app-name=mlplane-auth" in argv and ADMIN_PW not in " ".join(argv)
    # The operator's credentials, as its pod gets them, and the storage initializer's headers.
    _, operator_env = container_process(objs, secrets, "mlplane-operator", "operator")
    admin = (operator_env["MLFLOW_TRACKING_USERNAME"], operator_env["MLFLOW_TRACKING_PASSWORD"])
    assert admin == ("mlplane-admin", ADMIN_PW)
    storage = _secret_data(find(secrets, "Secret", "mlplane-mlflow-storage"))
    tracking = find(objs, "ConfigMap", "mlplane-operator")["data"]["MLFLOW_TRACKING_URI"]
    assert storage["https-host"] == urllib.parse.urlparse(tracking).hostname  # the host of every storageUri
    reader_headers = json.loads(storage["headers"])
    host = f"{SVC}.{NAMESPACE}.svc:5000"

    def call(method: str, path: str, body: Obj | None = None, **kw: Any) -> requests.Response:
        return requests.request(method, f"{url}/api/2.0/mlflow/{path}", json=body, timeout=30,
                                headers={"Host": host, **kw.pop("headers", {})}, **kw)

    with mlflow_server(argv, env, tmp_path) as url:
        assert requests.get(f"{url}/health", headers={"Host": host}, timeout=30).status_code == 200
        for method, path, body in [("POST", "registered-models/create", {"name": "evil"}),
                                   ("POST", "registered-models/alias", {"name": "m", "alias": "champion",
                                                                        "version": "1"}),
                                   ("GET", "registered-models/search", None)]:
            r = call(method, path, body)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="mlflow"', (path, r.text)
            assert call(method, path, body, auth=("mlplane-admin", "wrong-password-1")).status_code == 401
        assert call("POST", "registered-models/create", {"name": "fraud"}, auth=admin).status_code == 200
        got = call("GET", "registered-models/get?name=fraud", headers=reader_headers)
        assert got.status_code == 200 and got.json()["registered_model"]["name"] == "fraud"
        denied = call("POST", "registered-models/create", {"name": "evil"}, headers=reader_headers)
        assert denied.status_code == 403 and "may only read" in denied.json()["message"]
        assert call("GET", "registered-models/get?name=evil", auth=admin).status_code == 404

        # The writer, as ingestion Jobs get it (the serving namespace's Secret): logs and registers ...
        written = _secret_data(find(secrets, "Secret", "mlplane-mlflow-writer"))
        writer = (written["username"], written["password"])
        assert writer == ("mlplane-writer", WRITER_PW)
        experiment = call("POST", "experiments/create", {"name": "ingest"}, auth=writer)
        assert experiment.status_code == 200, experiment.text
        run = call("POST", "runs/create", {"experiment_id": experiment.json()["experiment_id"]}, auth=writer)
        assert run.status_code == 200, run.text
        run_id = run.json()["run"]["info"]["run_id"]
        assert call("POST", "runs/log-batch", {"run_id": run_id, "params": [{"key": "chunk_size", "value": "512"}]},
                    auth=writer).status_code == 200
        assert call("POST", "registered-models/create", {"name": "docs-embedder"}, auth=writer).status_code == 200
        version = call("POST", "model-versions/create", {"name": "docs-embedder", "source": f"runs:/{run_id}/m",
                                                         "run_id": run_id}, auth=writer)
        assert version.status_code == 200, version.text
        assert call("POST", "registered-models/alias", {"name": "docs-embedder", "alias": "champion",
                                                        "version": version.json()["model_version"]["version"]},
                    auth=writer).status_code == 200
        # ... and administers nothing: no deletes, no user or permission management (the admin's calls).
        for method, path, body in [("DELETE", "registered-models/delete", {"name": "fraud"}),
                                   ("DELETE", "registered-models/alias",
                                    {"name": "docs-embedder", "alias": "champion"}),
                                   ("POST", "runs/delete", {"run_id": run_id}),
                                   ("POST", "registered-models/rename", {"name": "fraud", "new_name": "f2"}),
                                   ("POST", "users/create", {"username": "eve", "password": "eve-Pa55word-9"}),
                                   ("PATCH", "users/update-admin", {"username": "mlplane-writer", "is_admin": True}),
                                   ("POST", "registered-models/permissions/create",
                                    {"name": "fraud", "username": "eve", "permission": "MANAGE"})]:
            refused = call(method, path, body, auth=writer)
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["error_code"] == "PERMISSION_DENIED"
            assert "needs the admin" in refused.json()["message"]
        assert call("GET", "registered-models/get?name=fraud", auth=writer).status_code == 200  # still there
        assert call("DELETE", "registered-models/delete", {"name": "fraud"}, auth=admin).status_code == 200
        assert call("GET", "registered-models/get?name=fraud", auth=writer).status_code == 404
