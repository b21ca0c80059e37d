"""The platform's own components (MLflow, Milvus Lite, Feast) as a registry: each says when the Platform
wants it, what to set up on disk, how to run it and what the rest of the platform learns from it.

The supervisor starts the enabled ones in this order, one loop, no per-component code of its own;
:mod:`mlplane.runtime.local.plan` holds the pure process builders they use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlplane.auth.mlflow import prepare_server_auth
from mlplane.features.local import write_repo_config
from mlplane.runtime.local.paths import StatePaths
from mlplane.runtime.local.plan import (
    FEATURE_STORE_COMPONENT,
    MLFLOW_COMPONENT,
    VECTOR_STORE_COMPONENT,
    ProcessSpec,
    feature_server_process,
    milvus_lite_process,
    mlflow_process,
)
from mlplane.spec import Platform

__all__ = ["PLATFORM_COMPONENTS", "PlatformComponent"]

Setup = dict[str, Any]  # what a component's setup made (files, credentials) for its process and info


@dataclass(frozen=True)
class PlatformComponent:
    name: str  # the component's key in state.json and ports.json
    title: str  # for messages: "<title> did not start: ..."
    enabled: Callable[[Platform], bool]
    fixed_port: Callable[[Platform], int | None]  # the port the Platform sets; None: one is allocated and kept
    process: Callable[[StatePaths, Platform, str, int, Setup], ProcessSpec]  # (paths, platform, host, port, setup)
    # On disk before it starts (blocking; the supervisor runs it in a worker thread).
    setup: Callable[[StatePaths, Platform], Setup] = lambda paths, platform: {}
    info: Callable[[StatePaths, Setup], dict[str, Any]] = lambda paths, setup: {}  # shown by `status`
    provides: str = ""  # what its URL is to the platform: "tracking" (MLflow) or "vectorStore" (Milvus)


def _mlflow_setup(paths: StatePaths, platform: Platform) -> Setup:
    """With auth on, MLflow's own basic auth: nobody writes the registry without the platform's credentials.

    The credentials go into this process's environment, where MLflow's client reads them on every request:
    the supervisor's own registry calls and every child it starts (model servers, Ray applications, Triton's
    Python stubs) authenticate without a flag. They replace MLflow credentials from the caller's shell,
    which belong to another server.
    """
    if not platform.spec.auth.enabled:
        return {"auth": None}
    files, creds = prepare_server_auth(paths.root)
    os.environ.update(creds.env())
    return {"auth": files}


def _mlflow(paths: StatePaths, platform: Platform, host: str, port: int, setup: Setup) -> ProcessSpec:
    tracking = platform.spec.tracking
    return mlflow_process(paths, host, port, tracking.backend_store_uri, tracking.artifacts_destination,
                          auth=setup["auth"])


def _milvus_setup(paths: StatePaths, platform: Platform) -> Setup:
    paths.milvus_dir.mkdir(parents=True, exist_ok=True)
    return {}


def _feast_setup(paths: StatePaths, platform: Platform) -> Setup:
    return {"config": write_repo_config(platform, paths.feast_dir)}


PLATFORM_COMPONENTS: tuple[PlatformComponent, ...] = (
    PlatformComponent(
        name=MLFLOW_COMPONENT, title="MLflow",
        enabled=lambda p: p.spec.tracking.mode != "external",  # external: the Platform's tracking.uri
        fixed_port=lambda p: p.spec.tracking.port,
        setup=_mlflow_setup, process=_mlflow, provides="tracking",
    ),
    PlatformComponent(
        name=VECTOR_STORE_COMPONENT, title="the Milvus Lite vector store",
        enabled=lambda p: p.spec.vector_store.enabled and p.spec.vector_store.backend == "milvus-lite",
        fixed_port=lambda p: p.spec.vector_store.port,
        setup=_milvus_setup,
        process=lambda paths, platform, host, port, setup: milvus_lite_process(paths, host, port),
        info=lambda paths, setup: {"dataDir": str(paths.milvus_dir)},
        provides="vectorStore",
    ),
    PlatformComponent(
        name=FEATURE_STORE_COMPONENT, title="the Feast feature server",
        enabled=lambda p: p.spec.feature_store.enabled,
        fixed_port=lambda p: p.spec.feature_store.port,
        setup=_feast_setup,
        process=lambda paths, platform, host, port, setup: feature_server_process(paths, host, port),
        info=lambda paths, setup: {"featureStoreYaml": str(setup["config"])},
    ),
)
