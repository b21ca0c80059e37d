"""What a deployment gets once its Platform is known: rules both runtimes (local and cluster) apply alike."""

from __future__ import annotations

from mlplane.spec.common import Runtime
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.platform import Platform

__all__ = ["effective_runtime"]


def effective_runtime(deployment: ModelDeployment, platform: Platform) -> Runtime:
    """`spec.runtime` when the deployment names one, else the platform's `serving.defaultRuntime`."""
    if "runtime" in deployment.spec.model_fields_set:
        return deployment.spec.runtime
    return platform.spec.serving.default_runtime
