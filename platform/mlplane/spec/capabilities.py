"""What each serving runtime can do, declared once: the spec rules, the local runtime and the cluster render
read this table instead of naming runtimes in conditions of their own.

A runtime is a plugin of each executor (:mod:`mlplane.runtime.local.runtimes` for the local supervisor,
:mod:`mlplane.k8s.render` for the cluster); what a deployment may ask of it (online features, batching,
several model instances, a RAG application, API keys) is decided here, from the effective runtime
(:func:`mlplane.spec.effective.effective_runtime`), the same way on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CAPABILITIES", "RuntimeCapabilities", "capabilities", "runtimes_with"]


@dataclass(frozen=True)
class RuntimeCapabilities:
    name: str  # a value of mlplane.spec.common.Runtime (this module sits below it: the rules read the table)
    features: bool  # joins online Feast features to every request (spec.features)
    batching: bool  # batches requests (spec.batching)
    instances: bool  # several model instances per replica (spec.instances)
    rag: bool  # serves a RAG application (spec.rag, spec.retrieval)
    rollout: bool  # rolls out a new version with spec.rollout (canary, allowOutage)
    canary: bool  # serves one port, as KServe's Serverless (Knative) canary needs
    api_keys: bool  # checks mlplane API keys itself (spec.auth.enabled)
    grpc: bool  # answers the V2 gRPC protocol (when the Platform's serving.grpc is on)
    metrics_port: bool  # exposes Prometheus metrics on a port of its own
    needs_signature: bool  # declares its tensors from the model's signature (the resolution reads it)


CAPABILITIES: dict[str, RuntimeCapabilities] = {
    "kserve": RuntimeCapabilities("kserve", features=True, batching=False, instances=False, rag=False,
                                  rollout=True, canary=True, api_keys=True, grpc=True, metrics_port=False,
                                  needs_signature=False),
    # Triton serves clients on gRPC, health and metrics on HTTP (docs/triton-limits.md): three ports, no canary.
    "triton": RuntimeCapabilities("triton", features=False, batching=True, instances=True, rag=False,
                                  rollout=True, canary=False, api_keys=False, grpc=True, metrics_port=True,
                                  needs_signature=True),
    "ray": RuntimeCapabilities("ray", features=False, batching=True, instances=False, rag=True,
                               rollout=False, canary=False, api_keys=True, grpc=False, metrics_port=False,
                               needs_signature=False),
}


def capabilities(runtime: str) -> RuntimeCapabilities:
    return CAPABILITIES[runtime]


def runtimes_with(capability: str) -> tuple[str, ...]:
    """The runtimes that have ``capability`` (a field of :class:`RuntimeCapabilities`), in table order."""
    return tuple(name for name, caps in CAPABILITIES.items() if getattr(caps, capability))
