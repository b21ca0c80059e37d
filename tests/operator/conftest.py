"""Fixtures: one MLflow server, and one kmock API server and one running operator per test module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import kmock
import pytest
import pytest_asyncio
import yaml
from operator_apiserver import ApiServer
from operator_harness import (
    DEFAULT_PLATFORM,
    DEFAULT_PLATFORM_SPEC,
    SERVING_ACCOUNT,
    VERBS,
    Harness,
    Mlflow,
    Operator,
    Relay,
    running_mlflow,
    wait_for,
)

from mlplane_operator import OperatorConfig
from mlplane_operator.kube import CHILD_KINDS, PLATFORM_CHILD_KINDS


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """One MLflow for every operator test module (each trains its models under its own names)."""
    from mlplane_pipelines.iris import train_and_register

    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        train_and_register(server.url, name="iris", alias="champion")
        yield server



@pytest.fixture(scope="module")
def operator_settings() -> dict[str, float]:
    """OperatorConfig fields a test module sets differently (override the fixture in the module)."""
    return {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(mlflow: Mlflow, tmp_path_factory: pytest.TempPathFactory,
                  operator_settings: dict[str, float]) -> AsyncIterator[Harness]:
    api = ApiServer()
    async with api, kmock.Server(api) as server:
        api.resources.load_bundled()  # the built-in kinds (kopf waits for namespaces and CRDs to exist)
        for kind in (("mlplane.io", "v1alpha1", "modeldeployments", "ModelDeployment"),
                     ("mlplane.io", "v1alpha1", "platforms", "Platform"),
                     *((k.group, k.version, k.plural, k.kind) for k in (*CHILD_KINDS, *PLATFORM_CHILD_KINDS))):
            group, version, plural, name = kind
            if group:  # core kinds (ConfigMap) are bundled
                api.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                    kind=name, namespaced=True, verbs=VERBS, subresources={"status"})
        kubeconfig = tmp_path_factory.mktemp("kube") / "config"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
            "users": [{"name": "kmock", "user": {}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}]}))
        saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                                 "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update(KUBECONFIG=str(kubeconfig), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                          MLFLOW_HTTP_REQUEST_TIMEOUT="5")
        relay = Relay(mlflow.port)
        settings = {"resync_seconds": 1.0, "retry_seconds": 1.0, "probe_timeout_seconds": 2.0,
                    **operator_settings}
        config = OperatorConfig(tracking_uri=await relay.start(), namespace="mlplane", **settings)
        operator = Operator(config, str(server.url).rstrip("/"))
        await operator.start()
        harness = Harness(api, operator, relay, mlflow)
        try:
            # What the chart creates in each of its `serving.namespaces`: the model servers' account.
            await harness.create_service_account(SERVING_ACCOUNT)
            # What the chart installs from its `platform:` value: the Platform named 'default' (here with a
            # feature store, so features deployments render).
            await harness.create_platform(DEFAULT_PLATFORM, DEFAULT_PLATFORM_SPEC)
            await wait_for(lambda: harness.platform_status(DEFAULT_PLATFORM).get("observedGeneration") == 1,
                           "the default Platform to be reconciled")
            yield harness
        finally:
            await operator.stop()
            await relay.close()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
