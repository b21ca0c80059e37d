"""The Ray Serve application of a `runtime: ray` deployment, from the spec. Pure: no I/O.

:func:`serve_app_config` returns one entry of a Ray Serve config's ``applications`` list. The local
runtime deploys it with Serve's own config path (``python -m mlplane.rag.serve_local``) and the
cluster render puts it in the RayService's ``serveConfigV2``: the same application either way.

The application (:func:`mlplane.rag.serve_app.build_app`) is four Serve deployments::

    Ingress (FastAPI, OpenAI-compatible) ──► Embedder (@serve.batch) ──► Retriever (Milvus) ──► Generator

``spec.autoscaling`` scales the Embedder and the Generator (Ray Serve autoscaling on ongoing
requests); the Ingress and the Retriever, which only wait on others, run ``minReplicas`` (at least 1).

Each model actor's ``ray_actor_options`` come from its own resources: the Generator's from
``spec.resources`` (CPUs from ``requests.cpu``, GPUs from ``gpus`` — a local generator only), the
Embedder's from ``spec.rag.embedder.resources`` (default 1 CPU, no GPU); the Ingress and the Retriever
take 0.1 CPU. The cluster render sizes the RayService's worker groups from these
(:mod:`mlplane.k8s.ray_cluster`).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlplane.spec.deployment import GeneratorType, ModelDeployment, RagSpec, ResourcesSpec
from mlplane.spec.platform import Platform
from mlplane.spec.rules import check_effective

IMPORT_PATH = "mlplane.rag.serve_app:build_app"
EMBEDDER, RETRIEVER, GENERATOR, INGRESS = "Embedder", "Retriever", "Generator", "Ingress"
# Ray Serve's own default per replica; the Embedder takes at least two batches' worth.
DEFAULT_MAX_ONGOING_REQUESTS = 5
_CPU_SUFFIX = {"m": 1e-3, "": 1.0}
LIGHT_CPUS = 0.1  # the Ingress and the Retriever: they wait on the others


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedderArgs(_Args):
    model_uri: str
    max_batch_size: int = Field(default=1, ge=1)
    batch_wait_timeout_s: float = Field(default=0.0, ge=0)


class GeneratorArgs(_Args):
    type: GeneratorType = "local"
    model_uri: str | None = None  # local: spec.model as written; the pinned version comes in user_config
    url: str | None = None
    model_name: str | None = None
    api_key_env: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    timeout_s: float = 120.0


class LimitArgs(_Args):
    max_question_chars: int = 2000
    max_input_chars: int = 16000
    max_embedding_inputs: int = 256
    max_request_bytes: int = 16 * 1024 * 1024


class AuthArgs(_Args):
    enabled: bool = False
    keys_file: str | None = None  # the key file of `mlplane keys` (hashes only)
    requests_per_second: float = 10.0
    burst: int = 20


class RagAppArgs(_Args):
    """What :func:`mlplane.rag.serve_app.build_app` receives as ``args`` (validated there)."""

    name: str = Field(description="The deployment's name: the model id clients send.")
    tracking_uri: str | None = None  # None: MLFLOW_TRACKING_URI from the environment
    vector_store_uri: str | None = None
    vector_index: dict[str, Any] = {}  # the platform's spec.vectorStore.index (search parameters)
    collection: str | None = None  # default collection; requests may name another
    top_k: int = 4
    embedder: EmbedderArgs
    generator: GeneratorArgs
    limits: LimitArgs = LimitArgs()
    auth: AuthArgs = AuthArgs()


def _cpus(quantity: str | None, default: float) -> float:
    if quantity is None:
        return default
    suffix = "m" if quantity.endswith("m") else ""
    return float(quantity.removesuffix(suffix)) * _CPU_SUFFIX[suffix]


def actor_options(resources: ResourcesSpec, *, gpus: bool = True) -> dict[str, Any]:
    """``ray_actor_options`` of one model actor from its resources: CPUs from ``requests.cpu`` (else
    ``limits.cpu``, else 1), GPUs from ``gpus`` (when ``gpus`` is allowed for this actor)."""
    cpu = resources.requests.cpu if resources.requests and resources.requests.cpu else None
    if cpu is None and resources.limits is not None:
        cpu = resources.limits.cpu
    options: dict[str, Any] = {"num_cpus": _cpus(cpu, 1.0)}
    if gpus and resources.gpus:
        options["num_gpus"] = resources.gpus
    return options


def replica_range(deployment_config: dict[str, Any]) -> tuple[int, int]:
    """(fewest, most) replicas of one Serve deployment entry."""
    scaling = deployment_config.get("autoscaling_config")
    if scaling:
        return int(scaling["min_replicas"]), int(scaling["max_replicas"])
    n = int(deployment_config.get("num_replicas", 1))
    return n, n


def autoscaling_config(deployment: ModelDeployment) -> dict[str, Any]:
    """Ray Serve's ``autoscaling_config`` from ``spec.autoscaling``; ``{}`` without autoscaling."""
    scaling = deployment.spec.autoscaling
    if scaling is None:
        return {}
    config: dict[str, Any] = {
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "upscale_delay_s": float(scaling.scale_up.stabilization_window_seconds),
        # At least a cold start, as the cluster's KEDA scale-down window (mlplane.k8s.render.scale_down_window).
        "downscale_delay_s": float(max(scaling.scale_down.stabilization_window_seconds,
                                       math.ceil(deployment.spec.cold_start_seconds or 0))),
    }
    if scaling.target is not None:
        config["target_ongoing_requests"] = scaling.target.value
    return config


def _scaled(deployment: ModelDeployment) -> dict[str, Any]:
    config = autoscaling_config(deployment)
    if config:
        return {"autoscaling_config": config}
    return {"num_replicas": max(1, deployment.spec.replicas)}


def _fixed(deployment: ModelDeployment) -> dict[str, Any]:
    scaling = deployment.spec.autoscaling
    return {"num_replicas": max(1, scaling.min_replicas if scaling else deployment.spec.replicas)}


def app_args(deployment: ModelDeployment, platform: Platform, *, tracking_uri: str | None = None,
             vector_store_uri: str | None = None, keys_file: str | None = None) -> RagAppArgs:
    """The application's arguments. They stay the same when ``spec.model`` moves to another version, so
    a promotion reconfigures the Generator only (see :func:`serve_app_config`)."""
    spec = deployment.spec
    rag = spec.rag or RagSpec()
    gen = rag.generator
    batching = spec.batching
    auth = platform.spec.auth
    return RagAppArgs(
        name=deployment.metadata.name,
        tracking_uri=tracking_uri,
        vector_store_uri=vector_store_uri,
        vector_index=platform.spec.vector_store.index.model_dump(mode="json", by_alias=True),
        collection=spec.retrieval.collection if spec.retrieval else None,
        top_k=spec.retrieval.top_k if spec.retrieval else 4,
        embedder=EmbedderArgs(
            model_uri=rag.embedder.model,
            max_batch_size=batching.max_batch_size if batching else 1,
            batch_wait_timeout_s=batching.max_latency_ms / 1000 if batching else 0.0,
        ),
        generator=GeneratorArgs(
            type=gen.type,
            model_uri=spec.model if gen.type == "local" else None,
            url=gen.url, model_name=gen.model_name, api_key_env=gen.api_key_env,
            max_tokens=gen.max_tokens, temperature=gen.temperature, timeout_s=gen.timeout_seconds,
        ),
        limits=LimitArgs(max_question_chars=rag.max_question_chars, max_input_chars=rag.max_input_chars,
                         max_embedding_inputs=rag.max_embedding_inputs,
                         max_request_bytes=platform.spec.serving.max_request_bytes),
        auth=AuthArgs(enabled=auth.enabled, keys_file=keys_file,
                      requests_per_second=auth.rate_limit.requests_per_second, burst=auth.rate_limit.burst),
    )


def serve_app_config(deployment: ModelDeployment, platform: Platform, *, route_prefix: str = "/",
                     import_path: str = IMPORT_PATH, generator_uri: str | None = None, generator_version: str = "",
                     **uris: Any) -> dict[str, Any]:
    """One Ray Serve application (an entry of ``applications`` in a Serve config / ``serveConfigV2``).

    ``generator_uri``/``generator_version``: what ``spec.model`` resolved to; they go into the
    Generator's ``user_config``, a lightweight update: a new version reconfigures the running
    Generator replicas (``reconfigure`` loads it, then swaps) and restarts nothing else. ``uris`` go to
    :func:`app_args` (tracking and vector store URIs, the key file).
    """
    refused = check_effective(deployment.spec, "ray")  # the spec's rules (mlplane.spec.rules) for runtime ray
    if refused:
        raise ValueError(f"{deployment.metadata.name}: spec: " + "; ".join(refused))
    args = app_args(deployment, platform, **uris)
    spec = deployment.spec
    rag = spec.rag or RagSpec()
    embedder_actor = actor_options(rag.embedder.resources)
    generator_actor = actor_options(spec.resources, gpus=args.generator.type == "local")
    light: dict[str, Any] = {"num_cpus": LIGHT_CPUS}
    deployments = [
        {"name": INGRESS, **_fixed(deployment), "ray_actor_options": dict(light)},
        {"name": EMBEDDER, **_scaled(deployment), "ray_actor_options": embedder_actor,
         "max_ongoing_requests": max(DEFAULT_MAX_ONGOING_REQUESTS, 2 * args.embedder.max_batch_size)},
        {"name": RETRIEVER, **_fixed(deployment), "ray_actor_options": dict(light)},
        {"name": GENERATOR, **_scaled(deployment), "ray_actor_options": generator_actor},
    ]
    if args.generator.type == "local":
        deployments[-1]["user_config"] = {"model_uri": generator_uri or spec.model, "model_version": generator_version}
    return {
        "name": deployment.metadata.name,
        "route_prefix": route_prefix,
        "import_path": import_path,
        "args": args.model_dump(mode="json"),
        "deployments": deployments,
    }


def logical_cpus(app: dict[str, Any]) -> float:
    """Ray CPUs the application needs with every deployment at its most replicas."""
    return sum(replica_range(dep)[1] * dep["ray_actor_options"]["num_cpus"] for dep in app["deployments"])

