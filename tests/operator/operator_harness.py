"""Test harness: the operator in-process against kmock (the API server) and a real MLflow server.

MLflow is reached through a TCP relay the tests can cut, to make the registry unreachable
without stopping it. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import kopf
from operator_apiserver import ApiServer

from mlplane._generated import REPO_ROOT
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import mlflow_process
from mlplane.runtime.local.process import free_port, spawn, stop_tree

sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))
from platform_helpers import wait_http_ready

from mlplane_operator import OperatorConfig, register
from mlplane_operator.kube import CHILD_KINDS, GROUP, PLATFORM_CHILD_KINDS, PLATFORM_LABEL, PLATFORMS, PLURAL, VERSION

MD = f"{GROUP}/{VERSION}/{PLURAL}"
PLATFORM = f"{GROUP}/{VERSION}/{PLATFORMS}"
DEFAULT_PLATFORM = "default"
FEATURE_STORE = {"enabled": True, "project": "iris", "registry": "s3://mlplane/feast/registry.db",
                 "onlineStore": {"type": "redis", "options": {"ssl": False},
                                 "secrets": {"connection_string": {"name": "feast-redis", "key": "url"}}}}
DEFAULT_PLATFORM_SPEC = {"featureStore": FEATURE_STORE}
ISVC = "serving.kserve.io/v1beta1/inferenceservices"
SERVICE_ACCOUNTS = "v1/serviceaccounts"
SERVING_ACCOUNT = "mlplane-model-server"  # the Platform's default spec.serving.serviceAccountName
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- MLflow
@dataclass
class Mlflow:
    url: str
    port: int
    artifacts: Path


@contextlib.contextmanager
def running_mlflow(state_dir: Path) -> Iterator[Mlflow]:
    """A real MLflow tracking server + registry (sqlite, proxied artifacts under `state_dir`) on loopback."""
    paths = StatePaths(state_dir)
    port = free_port(HOST)
    spec = mlflow_process(paths, HOST, port)
    proc = spawn(spec)
    try:
        wait_http_ready(spec.ready_url, proc, spec.log)
        yield Mlflow(f"http://{HOST}:{port}", port, paths.mlflow_dir / "artifacts")
    finally:
        stop_tree(proc.pid)


class Relay:
    """A TCP relay to MLflow; `cut()` refuses and drops connections, as a network partition would."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.open = target_port, True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        return f"http://{HOST}:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


# --------------------------------------------------------------------------- the operator
class Operator:
    """`kopf.operator()` with mlplane's handlers, in its own thread and event loop (as `kopf run`).

    kopf cancels the tasks of its loop when it stops, so it must not share the test's loop.
    """

    def __init__(self, config: OperatorConfig, server_url: str) -> None:
        self.config, self.server_url = config, server_url
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    async def start(self) -> None:
        registry = kopf.OperatorRegistry()
        register(registry, self.config)
        server_url = self.server_url

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server_url)

        self._stop, ready = threading.Event(), threading.Event()

        def run() -> None:
            try:
                asyncio.run(kopf.operator(registry=registry, clusterwide=True, standalone=True,
                                          stop_flag=self._stop, ready_flag=ready))
            except BaseException as exc:  # surfaced by stop()
                self.error = exc

        self._thread = threading.Thread(target=run, name="kopf", daemon=True)
        self._thread.start()
        await wait_for(ready.is_set, "the operator to start")

    async def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        await wait_for(lambda: not self._thread.is_alive(), "the operator to stop")  # type: ignore[union-attr]
        self._thread = None
        assert self.error is None, self.error


@dataclass
class Harness:
    """The test's side: a user editing ModelDeployments, and KServe reporting readiness."""

    api: ApiServer
    operator: Operator
    relay: Relay
    mlflow: Mlflow
    namespace: str = "default"
    created: list[str] = field(default_factory=list)

    def url(self, resource: str, name: str | None = None, subresource: str | None = None) -> str:
        group_version, plural = resource.rsplit("/", 1)
        base = f"/apis/{group_version}" if "." in group_version.split("/")[0] else f"/api/{group_version}"
        out = f"{base}/namespaces/{self.namespace}/{plural}"
        return out + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")

    async def create(self, name: str, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}
        async with self.api.post(self.url(MD), json=body) as resp:
            assert resp.status < 300, await resp.text()
        self.created.append(name)

    async def delete_created(self) -> None:
        """Delete the ModelDeployments this test created and wait until they are gone (finalizers done)."""
        for name in self.created:
            if self.get(MD, name):
                await self.delete(name)
        for name in self.created:
            await wait_for(lambda name=name: self.get(MD, name) is None, f"{name} to be deleted")

    async def create_platform(self, name: str, spec: dict[str, Any], namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Platform",
                "metadata": {"name": name, "namespace": ns}, "spec": spec}
        url = self.url(PLATFORM).replace(f"/namespaces/{self.namespace}/", f"/namespaces/{ns}/")
        async with self.api.post(url, json=body) as resp:
            assert resp.status < 300, await resp.text()

    async def delete_platform(self, name: str) -> None:
        async with self.api.delete(self.url(PLATFORM, name)) as resp:
            assert resp.status < 300, await resp.text()

    async def create_service_account(self, name: str, namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}
        async with self.api.post(f"/api/v1/namespaces/{ns}/serviceaccounts", json=body) as resp:
            assert resp.status < 300, await resp.text()

    async def delete_service_account(self, name: str, namespace: str | None = None) -> None:
        ns = namespace or self.namespace
        async with self.api.delete(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}") as resp:
            assert resp.status < 300, await resp.text()

    def platform_status(self, name: str) -> dict[str, Any]:
        return (self.get(PLATFORM, name) or {}).get("status") or {}

    def platform_condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.platform_status(name).get("conditions", []) if c["type"] == type_), {})

    def platform_children(self, name: str) -> dict[str, dict[str, Any]]:
        """Live children of Platform `name` by kind (under the Platform's label)."""
        out = {}
        for kind in PLATFORM_CHILD_KINDS:
            for (res, ns, _), obj in self.api.objects.items():
                if (res.group, res.plural) == (kind.group, kind.plural) and ns == self.namespace and not obj.deleted \
                        and (obj.raw["metadata"].get("labels") or {}).get(PLATFORM_LABEL) == name:
                    out[kind.kind] = obj.raw
        return out

    async def patch(self, resource: str, name: str, changes: dict[str, Any], subresource: str | None = None) -> None:
        async with self.api.patch(self.url(resource, name, subresource), json=changes,
                                  headers={"Content-Type": "application/merge-patch+json"}) as resp:
            assert resp.status < 300, await resp.text()

    async def delete(self, name: str) -> None:
        async with self.api.delete(self.url(MD, name)) as resp:
            assert resp.status < 300, await resp.text()

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.api.objects[resource, self.namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else obj.raw

    def operator_requests(self) -> list[kmock.Request]:
        """What kopf and the operator's client sent (the test's own client is kmock's)."""
        return [r for r in self.api if r.resource is not None
                and not r.headers.get("User-Agent", "").startswith("kmock/")]

    def status(self, name: str) -> dict[str, Any]:
        return (self.get(MD, name) or {}).get("status") or {}

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), {})

    def children(self, name: str) -> dict[str, dict[str, Any]]:
        """Live children of `name` by kind (what the operator applied, under the deployment's label)."""
        out = {}
        for kind in CHILD_KINDS:
            for (res, ns, _), obj in self.api.objects.items():
                if (res.group, res.plural) == (kind.group, kind.plural) and ns == self.namespace \
                        and not obj.deleted \
                        and (obj.raw["metadata"].get("labels") or {}).get("mlplane.io/deployment") == name:
                    out[kind.kind] = obj.raw
        return out

    async def mark_ready(self, name: str) -> None:
        """Do what KServe does once the predictor's pods are ready."""
        await self.patch(ISVC, name, {"status": {
            "url": f"http://{name}.{self.namespace}.example.com",
            "conditions": [{"type": "Ready", "status": "True"}]}}, subresource="status")


async def wait_for(check: Callable[[], Any] | Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


