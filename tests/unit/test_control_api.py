"""The supervisor's control API end to end: the CLI's client (control.request) against the real Starlette app
served by uvicorn on a real Unix socket, over an in-test implementation of the supervisor's operations.

No MLflow and no model server: what is checked is the protocol — each operation round-trips, every error
comes back as the one error model with the exit code the CLI uses, the server survives a failing request,
and only the owner can reach the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlplane.runtime.local import control
from mlplane.runtime.local.components import NotFound, OperationError
from mlplane.runtime.local.control_api import bind_private_socket, error_reply, make_app, serve
from mlplane.runtime.local.paths import StatePaths
from mlplane.spec import ModelDeployment, dump_yaml, load_text

IRIS = """\
apiVersion: mlplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
spec:
  model: models:/iris/3
"""


class Ops:
    """The supervisor's side of the API, in memory: deployments by name, and failures on request."""

    def __init__(self) -> None:
        self.deployments: dict[str, ModelDeployment] = {}
        self.promoted: list[tuple[str, str]] = []
        self.shutdown_requested = False
        self.on_shutdown: Callable[[], None] | None = None  # as the supervisor: stop the API, then exit

    async def deploy(self, dep: ModelDeployment) -> dict[str, Any]:
        if dep.spec.model == "models:/refused/1":
            raise OperationError(f"deployment '{dep.metadata.name}': model 'refused' is not registered", code=2)
        self.deployments[dep.metadata.name] = dep
        return {"name": dep.metadata.name, "model": dep.spec.model, "status": "ready"}

    async def undeploy(self, name: str) -> dict[str, Any]:
        if name not in self.deployments:
            raise NotFound(f"no deployment named '{name}' (deployed: {', '.join(self.deployments) or 'none'})")
        del self.deployments[name]
        return {"name": name, "status": "removed"}

    async def promote(self, name: str, version: str) -> dict[str, Any]:
        if name == "buggy":
            raise KeyError("servedVersion")
        self.promoted.append((name, version))
        return {"name": name, "previousVersion": "3", "servedVersion": version}

    def request_shutdown(self) -> None:
        self.shutdown_requested = True
        if self.on_shutdown is not None:
            self.on_shutdown()


class Platform:
    """A control API served in its own thread and event loop, on a state dir whose supervisor lock is held."""

    def __init__(self, root: Path, stop_on_shutdown: bool = False):
        self.paths = StatePaths(root)
        self.ops = Ops()
        if stop_on_shutdown:
            self.ops.on_shutdown = lambda: self._stop.set() if self._stop is not None else None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await serve(make_app(self.ops), self.paths.socket)
        self._ready.set()
        await self._stop.wait()
        await server.stop()

    def __enter__(self) -> Platform:
        self.paths.ensure()
        self._lock = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)  # as Supervisor.acquire_lock
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._lock, str(os.getpid()).encode())
        self._thread.start()
        assert self._ready.wait(60), "the control API did not start"
        return self

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the control API did not stop"

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.join()
        os.close(self._lock)

    def raw(self) -> httpx.Client:
        """A plain HTTP client on the socket, for what the CLI's client does not show (statuses, bodies)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.paths.socket)),
                            base_url="http://mlplane-supervisor", timeout=30)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with Platform(tmp_path / ".mlplane") as p:
        yield p


def test_every_operation_round_trips(platform: Platform) -> None:
    assert control.request(platform.paths, "ping") == {"pid": os.getpid()}

    deployed = control.request(platform.paths, "deploy", name="iris", yaml=IRIS, source="iris.yaml")
    assert deployed == {"name": "iris", "model": "models:/iris/3", "status": "ready"}
    assert platform.ops.deployments["iris"] == load_text(IRIS)[0]

    promoted = control.request(platform.paths, "promote", name="iris", version="4")
    assert promoted["servedVersion"] == "4" and platform.ops.promoted == [("iris", "4")]

    assert control.request(platform.paths, "undeploy", name="iris") == {"name": "iris", "status": "removed"}
    assert platform.ops.deployments == {}

    assert control.request(platform.paths, "shutdown", timeout=10.0) == {"stopping": True}
    assert platform.ops.shutdown_requested


def test_shutdown_answers_then_the_server_stops_and_removes_its_socket(tmp_path: Path) -> None:
    with Platform(tmp_path / ".mlplane", stop_on_shutdown=True) as p:
        assert control.request(p.paths, "shutdown", timeout=10.0) == {"stopping": True}
        p.join()
        assert not p.paths.socket.exists()


def test_deploy_of_what_the_cli_sends(platform: Platform) -> None:
    """The CLI sends dump_yaml([dep]) of a spec it loaded: the supervisor receives the same deployment."""
    (dep,) = load_text(IRIS.replace("name: iris", "name: iris-eu"))
    control.request(platform.paths, "deploy", name="iris-eu", yaml=dump_yaml([dep]), source="/home/ana/spécs/iris.yaml")
    assert platform.ops.deployments["iris-eu"] == dep


def test_an_invalid_spec_is_bad_input_naming_the_field_and_the_source(platform: Platform) -> None:
    with pytest.raises(control.ControlError) as caught:
        control.request(platform.paths, "deploy", name="iris", yaml=IRIS + "  replicas: -1\n",
                        source="/home/ana/spécs/iris.yaml")
    assert caught.value.code == 2
    assert "spec.replicas" in str(caught.value) and "/home/ana/spécs/iris.yaml" in str(caught.value)
    assert platform.ops.deployments == {}


def test_yaml_that_does_not_parse_is_bad_input(platform: Platform) -> None:
    with pytest.raises(control.ControlError) as caught:
        control.request(platform.paths, "deploy", name="iris", yaml="kind: [ModelDeployment\n", source="broken.yaml")
    assert caught.value.code == 2 and "broken.yaml" in str(caught.value)


def test_a_body_that_is_not_one_model_deployment_named_as_the_path_is_refused(platform: Platform) -> None:
    with platform.raw() as client:
        renamed = client.put("/v1/deployments/other", content=IRIS, headers={"Content-Type": "application/yaml"})
        assert renamed.status_code == 400
        assert renamed.json()["exitCode"] == 2
        assert "metadata.name is 'iris'" in renamed.json()["error"] and "'other'" in renamed.json()["error"]

        two = IRIS + "---\n" + IRIS.replace("name: iris", "name: wine")
        many = client.put("/v1/deployments/iris", content=two, headers={"Content-Type": "application/yaml"})
        assert many.status_code == 400 and "exactly one ModelDeployment" in many.json()["error"]

        platform_doc = "apiVersion: mlplane.io/v1alpha1\nkind: Platform\nmetadata:\n  name: iris\nspec: {}\n"
        kind = client.put("/v1/deployments/iris", content=platform_doc, headers={"Content-Type": "application/yaml"})
        assert kind.status_code == 400 and "found Platform" in kind.json()["error"]

        garbled = client.put("/v1/deployments/iris", content="kind: [ModelDeployment\n",
                             headers={"Content-Type": "application/yaml", "X-Mlplane-Source": "sp%C3%A9c.yaml"})
        assert garbled.status_code == 400 and garbled.json()["error"].startswith("spéc.yaml")

        form = client.put("/v1/deployments/iris", content=IRIS,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415 and "application/yaml" in form.json()["error"]

        for body in (b"3", b"{}", b'{"version": true}', b"not json"):
            bad = client.post("/v1/deployments/iris/promote", content=body)
            assert bad.status_code == 400 and bad.json()["exitCode"] == 2 and "version" in bad.json()["error"]
    assert platform.ops.deployments == {} and platform.ops.promoted == []


def test_an_operation_refusing_the_request_is_bad_input(platform: Platform) -> None:
    refused = IRIS.replace("models:/iris/3", "models:/refused/1")
    with pytest.raises(control.ControlError) as caught:
        control.request(platform.paths, "deploy", name="iris", yaml=refused, source="iris.yaml")
    assert caught.value.code == 2 and "model 'refused' is not registered" in str(caught.value)
    with platform.raw() as client:
        reply = client.put("/v1/deployments/iris", content=refused, headers={"Content-Type": "application/yaml"})
    assert reply.status_code == 400
    assert reply.json() == {"error": "deployment 'iris': model 'refused' is not registered", "exitCode": 2}


def test_an_operation_failing_is_a_runtime_failure(platform: Platform) -> None:
    with pytest.raises(control.ControlError) as caught:
        control.request(platform.paths, "undeploy", name="wine")
    assert caught.value.code == 1 and str(caught.value) == "no deployment named 'wine' (deployed: none)"
    with platform.raw() as client:
        assert client.delete("/v1/deployments/wine").status_code == 404


def test_a_bug_is_reported_logged_and_the_server_keeps_serving(platform: Platform,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="mlplane.supervisor.control"), \
            pytest.raises(control.ControlError) as caught:
        control.request(platform.paths, "promote", name="buggy", version="2")
    assert caught.value.code == 1 and str(caught.value) == "KeyError: 'servedVersion'"
    assert any(r.exc_info and "/v1/deployments/buggy/promote" in r.getMessage() for r in caplog.records)
    assert control.request(platform.paths, "ping") == {"pid": os.getpid()}


def test_unknown_routes_answer_in_the_same_error_model(platform: Platform) -> None:
    with platform.raw() as client:
        missing = client.get("/v2/deployments")
        wrong_method = client.get("/v1/shutdown")
    assert missing.status_code == 404 and missing.json()["exitCode"] == 2
    assert "another mlplane version" in missing.json()["error"]
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert "GET /v1/shutdown" in wrong_method.json()["error"]


def test_only_the_owner_can_reach_the_socket_and_stop_removes_it(tmp_path: Path) -> None:
    with Platform(tmp_path / ".mlplane") as p:
        sock = p.paths.socket
        assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert not sock.exists()
    with pytest.raises(control.ControlError, match="no platform is running on"):
        control.request(p.paths, "ping")


@contextlib.contextmanager
def supervisor_lock(paths: StatePaths) -> Iterator[None]:
    """The state dir's supervisor lock, held as Supervisor.acquire_lock holds it."""
    paths.ensure()
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def test_a_held_lock_without_a_server_did_not_answer(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / ".mlplane")
    with supervisor_lock(paths), pytest.raises(control.ControlError) as caught:
        control.request(paths, "ping")
    assert caught.value.code == 1 and f"the supervisor on {paths.root} did not answer" in str(caught.value)


def test_a_supervisor_speaking_the_old_json_lines_protocol_gets_a_restart_hint(tmp_path: Path) -> None:
    """A platform an older mlplane started answers one JSON line per connection, not HTTP."""
    paths = StatePaths(tmp_path / ".mlplane")
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    async def old_supervisor() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readline()
            writer.write(b'{"ok": false, "error": "JSONDecodeError: Expecting value", "code": 1}\n')
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(handle, path=str(paths.socket))
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        server.close()

    with supervisor_lock(paths):
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(old_supervisor(),))
        thread.start()
        try:
            assert ready.wait(60)
            with pytest.raises(control.ControlError) as caught:
                control.request(paths, "undeploy", name="iris")
        finally:
            for event in stop:
                loop.call_soon_threadsafe(event.set)
            thread.join(60)
            loop.close()
    assert caught.value.code == 1 and "closed the connection without answering" in str(caught.value)
    assert "`mlplane down` and `mlplane up`" in str(caught.value)


def test_a_stale_socket_is_replaced_and_another_file_is_left_alone(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    bind_private_socket(stale).close()  # what a killed supervisor leaves
    bind_private_socket(stale).close()
    regular = tmp_path / "notes.sock"
    regular.write_text("mine")
    with pytest.raises(OperationError, match="is not a socket"):
        bind_private_socket(regular)
    assert regular.read_text() == "mine"


def test_the_server_leaves_the_signals_to_the_supervisor(tmp_path: Path) -> None:
    """uvicorn would install its own SIGTERM/SIGINT handlers: then `mlplane down`'s SIGTERM would stop only the
    API and not the supervisor. The loop's handlers (Supervisor.run's) must still be the ones in place."""
    stopping: list[int] = []

    async def main() -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.append, signal.SIGTERM)
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        server = await serve(make_app(Ops()), tmp_path / "s.sock")
        try:
            during = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                if stopping:
                    break
                await asyncio.sleep(0.01)
        finally:
            await server.stop()
            loop.remove_signal_handler(signal.SIGTERM)
        return before, during

    before, during = asyncio.run(main())
    assert during == before and stopping == [signal.SIGTERM]


def test_the_error_model_maps_statuses_in_one_place() -> None:
    assert error_reply(NotFound("no deployment named 'x'")) == (404, {"error": "no deployment named 'x'",
                                                                      "exitCode": 1})
    assert error_reply(OperationError("refused", code=2)) == (400, {"error": "refused", "exitCode": 2})
    assert error_reply(OperationError("MLflow did not answer")) == (409, {"error": "MLflow did not answer",
                                                                          "exitCode": 1})

    class Unmarked(OperationError):  # an error without a status of its own: by its exit code
        def __init__(self, message: str, code: int = 1):
            super().__init__(message, code)
            self.status = None  # type: ignore[assignment]

    assert error_reply(Unmarked("refused", code=2))[0] == 400 and error_reply(Unmarked("failed"))[0] == 500
    assert error_reply(ValueError("bad")) == (500, {"error": "ValueError: bad", "exitCode": 1})

