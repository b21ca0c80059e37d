"""Bounded checks of a Platform's dependencies: does MLflow answer, does Milvus answer. I/O only.

Each returns a condition; none waits longer than its timeout (a hung dependency never holds a
worker), and none sends credentials.
"""

from __future__ import annotations

import concurrent.futures
from urllib.parse import urlsplit

import httpx

from mlplane_operator.plan import Condition

# A read-only call every MLflow server answers; 401/403 (basic auth on) still means it is up.
MLFLOW_PING = "/api/2.0/mlflow/experiments/search?max_results=1"


def tracking(uri: str | None, timeout: float) -> Condition:
    """TrackingReachable: MLflow's REST API answers at `uri` within `timeout` seconds."""
    if not uri:
        return Condition("TrackingReachable", "False", "NoTrackingUri",
                         "the Platform's tracking is embedded and the operator has no MLFLOW_TRACKING_URI; "
                         "set spec.tracking.mode: external with spec.tracking.uri")
    try:
        response = httpx.get(uri.rstrip("/") + MLFLOW_PING, timeout=timeout)
    except httpx.HTTPError as exc:
        return Condition("TrackingReachable", "False", "Unreachable",
                         f"MLflow at {uri} did not answer within {timeout:g}s: {type(exc).__name__}: {exc}")
    if response.status_code >= 500:
        return Condition("TrackingReachable", "False", "ServerError",
                         f"MLflow at {uri} answered {response.status_code}")
    return Condition("TrackingReachable", "True", "Reachable", f"MLflow answers at {uri}")


def _milvus_version(uri: str, timeout: float) -> str:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=timeout)
    try:
        return str(client.get_server_version())
    finally:
        client.close()


def vector_store(uri: str | None, timeout: float) -> Condition:
    """VectorStoreReachable: Milvus answers at `uri` within `timeout` seconds (an auth refusal is an answer)."""
    if not uri:
        return Condition("VectorStoreReachable", "False", "NoUri",
                         "spec.vectorStore.uri: the cluster needs backend 'milvus' with its uri")
    host = urlsplit(uri).hostname or uri
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="milvus-probe")
    try:
        version = pool.submit(_milvus_version, uri, timeout).result(timeout=timeout + 1)
    except concurrent.futures.TimeoutError:
        return Condition("VectorStoreReachable", "False", "Unreachable",
                         f"Milvus at {uri} did not answer within {timeout:g}s")
    except Exception as exc:  # pymilvus raises its own and grpc's errors
        text = str(getattr(exc, "message", "") or exc)
        if any(word in text.lower() for word in ("auth", "token", "permission", "credential")):
            return Condition("VectorStoreReachable", "True", "Reachable",
                             f"Milvus answers at {host} (it asks for credentials)")
        return Condition("VectorStoreReachable", "False", "Unreachable", f"Milvus at {uri}: {text[:300]}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return Condition("VectorStoreReachable", "True", "Reachable", f"Milvus {version} answers at {host}")
