"""The RayService's Ray cluster, sized by the Serve application it runs. Pure: no I/O.

The head runs no Serve replicas and has no GPUs (``num-cpus: 0``, ``num-gpus: 0``). Worker groups follow
the actors of the application (:func:`mlplane.rag.serve_config.serve_app_config`):

- ``generator`` (``generator-gpu`` with GPUs): the Generator, one replica per pod; the pod is
  ``spec.resources`` (requests, limits, GPUs, GPU product), like a KServe predictor's;
- ``embedder-gpu``: the Embedder, when ``spec.rag.embedder.resources`` asks for GPUs;
- ``workers``: the Ingress, the Retriever and a CPU Embedder; its pods are the Embedder's resources
  (default 1 CPU, 2Gi).

Each group's ``maxReplicas`` can host every actor it holds at the actor's most Serve replicas (pods
counted per actor kind, so the bound holds however Ray packs them); ``minReplicas`` is the CPUs and GPUs
of the fewest replicas, in pods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlplane.rag.serve_config import EMBEDDER, GENERATOR, replica_range
from mlplane.spec.deployment import ModelDeployment, RagSpec, ResourcesSpec
from mlplane.spec.platform import Platform

Obj = dict[str, Any]
HEAD_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
DEFAULT_WORKER_MEMORY = "2Gi"


@dataclass(frozen=True)
class WorkerGroup:
    """One worker group: its pods' resources and the Serve deployments (actors) placed on it."""

    name: str
    resources: ResourcesSpec
    actors: tuple[Obj, ...]  # entries of the application's `deployments`

    @property
    def gpus(self) -> int:
        return self.resources.gpus

    @property
    def cpus(self) -> int:
        """Ray CPUs of one pod: enough for the largest actor, at least 1."""
        return max(1, math.ceil(max(a["ray_actor_options"]["num_cpus"] for a in self.actors)))

    def fewest_pods(self) -> int:
        """Pods whose CPUs and GPUs add up to every actor at its fewest replicas (the autoscaler adds pods
        when packing needs more)."""
        cpus = sum(replica_range(a)[0] * a["ray_actor_options"]["num_cpus"] for a in self.actors)
        gpus = sum(replica_range(a)[0] * a["ray_actor_options"].get("num_gpus", 0) for a in self.actors)
        return max(math.ceil(cpus / self.cpus - 1e-9), math.ceil(gpus / self.gpus - 1e-9) if self.gpus else 0)

    def most_pods(self) -> int:
        """Pods enough for every actor at its most replicas however they pack: counted per actor kind."""
        total = 0
        for actor in self.actors:
            options = actor["ray_actor_options"]
            per_pod = math.floor(self.cpus / options["num_cpus"]) if options["num_cpus"] else 1_000
            if options.get("num_gpus"):
                per_pod = min(per_pod, math.floor(self.gpus / options["num_gpus"]))
            total += math.ceil(replica_range(actor)[1] / max(per_pod, 1))
        return total


def worker_groups(deployment: ModelDeployment, app: Obj) -> list[WorkerGroup]:
    """The groups the application's actors need, GPU actors apart from CPU ones."""
    by_name = {d["name"]: d for d in app["deployments"]}
    rag = deployment.spec.rag or RagSpec()
    embedder = rag.embedder.resources
    groups: list[WorkerGroup] = []
    light = tuple(d for n, d in by_name.items() if n not in (EMBEDDER, GENERATOR))
    if embedder.gpus:
        groups.append(WorkerGroup("workers", ResourcesSpec(), light))
        groups.append(WorkerGroup("embedder-gpu", embedder, (by_name[EMBEDDER],)))
    else:
        groups.append(WorkerGroup("workers", embedder, (*light, by_name[EMBEDDER])))
    generator = deployment.spec.resources
    if not by_name[GENERATOR]["ray_actor_options"].get("num_gpus"):
        generator = generator.model_copy(update={"gpus": 0, "gpu_type": None})
    groups.append(WorkerGroup("generator-gpu" if generator.gpus else "generator", generator, (by_name[GENERATOR],)))
    return groups


def _container_resources(group: WorkerGroup, gpu_resource_name: str) -> Obj:
    spec = group.resources
    requests = spec.requests.model_dump(exclude_none=True) if spec.requests else {}
    limits = spec.limits.model_dump(exclude_none=True) if spec.limits else {}
    requests.setdefault("cpu", str(group.cpus))
    if "memory" not in requests and "memory" not in limits:
        requests["memory"] = DEFAULT_WORKER_MEMORY
    if spec.gpus:
        limits[gpu_resource_name] = str(spec.gpus)
    return {"requests": requests, **({"limits": limits} if limits else {})}


def head_group(image: str, pod_labels: dict[str, str]) -> Obj:
    """The head: GCS, dashboard and the Serve controller; no replicas, no GPUs."""
    return {
        "rayStartParams": {"num-cpus": "0", "num-gpus": "0"},  # keep replicas (and GPU work) off the head
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {"containers": [{
                "name": "ray-head",
                "image": image,
                "resources": {k: dict(v) for k, v in HEAD_RESOURCES.items()},
                "ports": [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                          {"name": "client", "containerPort": 10001}, {"name": "serve", "containerPort": 8000}],
            }]},
        },
    }


def worker_group_specs(deployment: ModelDeployment, platform: Platform, app: Obj, *, image: str, gpu_image: str,
                       pod_labels: dict[str, str], placement: Callable[[ResourcesSpec], Obj]) -> list[Obj]:
    """KubeRay `workerGroupSpecs` for the application: sized by its actors, autoscaled in-tree."""
    out = []
    for group in worker_groups(deployment, app):
        params = {"num-cpus": str(group.cpus), "num-gpus": str(group.gpus)}
        fewest, most = group.fewest_pods(), group.most_pods()
        container = {"name": "ray-worker", "image": gpu_image if group.gpus else image,
                     "resources": _container_resources(group, platform.spec.gpu_node_pool.gpu_resource_name)}
        out.append({
            "groupName": group.name,
            "replicas": fewest,
            "minReplicas": fewest,
            "maxReplicas": max(most, 1),
            "rayStartParams": params,
            "template": {
                "metadata": {"labels": {**pod_labels, "mlplane.io/ray-group": group.name}},
                "spec": {"containers": [container], **placement(group.resources)},
            },
        })
    return out
