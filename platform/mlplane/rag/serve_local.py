"""A `runtime: ray` deployment on one machine: a private Ray instance running one Serve application.

``python -m mlplane.rag.serve_local --config app.json --host 127.0.0.1 --port P`` starts Ray (node
address 127.0.0.1, no dashboard), starts Serve's HTTP proxy on ``host:port`` and deploys the
application in ``app.json`` through Serve's config path, as ``serve run config.yaml`` and a KubeRay
RayService do. It logs application status changes, exits 1 if the deployment fails, and on SIGTERM
shuts Serve and Ray down (no raylet, GCS or worker is left behind).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve._private import api as serve_api
from ray.serve.schema import ServeDeploySchema

log = logging.getLogger("mlplane.rag.serve_local")

STATUS_INTERVAL_S = 2.0
STATUS_FILE = "status.json"  # next to the config: application status and running replicas per deployment


class _Stop(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _value(enum: Any) -> str:
    return str(getattr(enum, "value", enum))


def _app_status(app_name: str) -> dict[str, Any]:
    """The application's status and, per deployment, its status and running replicas."""
    app = serve.status().applications.get(app_name)
    if app is None:
        return {"status": "NOT_STARTED", "message": "", "deployments": {}}
    deployments = {
        name: {"status": _value(d.status),
               "replicas": sum(n for state, n in d.replica_states.items() if _value(state) == "RUNNING")}
        for name, d in app.deployments.items()
    }
    return {"status": _value(app.status), "message": app.message or "", "deployments": deployments}


def _write_status(path: Path, status: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2))
    tmp.replace(path)


def _schema(config: dict[str, Any], host: str, port: int) -> Any:
    return ServeDeploySchema.model_validate({"http_options": {"host": host, "port": port},
                                             "applications": [config["app"]]})


def run(config_file: Path, host: str, port: int) -> int:
    config = json.loads(config_file.read_text())
    app = config["app"]
    schema = _schema(config, host, port)
    mtime = config_file.stat().st_mtime_ns
    status_file = config_file.with_name(STATUS_FILE)
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             num_cpus=config.get("num_cpus"), object_store_memory=config.get("object_store_bytes"),
             namespace="serve", configure_logging=False)
    try:
        client = serve_api.serve_start(http_options={"host": host, "port": port})
        client.deploy_apps(schema, _blocking=False)
        log.info("deployed application '%s' on http://%s:%d", app["name"], host, port)
        last = ""
        while True:
            if config_file.stat().st_mtime_ns != mtime:  # the supervisor pinned another model version
                mtime = config_file.stat().st_mtime_ns
                log.info("%s changed: redeploying", config_file)
                client.deploy_apps(_schema(json.loads(config_file.read_text()), host, port), _blocking=False)
            current = _app_status(app["name"])
            _write_status(status_file, current)
            summary = f"{current['status']} {current['message']}".strip()
            if summary != last:
                log.info("application '%s': %s", app["name"], summary)
                last = summary
            if current["status"] == "DEPLOY_FAILED":
                log.error("the application failed to deploy: %s", current["message"])
                return 1
            time.sleep(STATUS_INTERVAL_S)
    except _Stop:
        log.info("stopping")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlplane-rag-serve", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="JSON: {app, num_cpus, object_store_bytes}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run(args.config, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
