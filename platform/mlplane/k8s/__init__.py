"""Kubernetes side of mlplane: CRDs generated from the spec and pure spec → object rendering.

Nothing here talks to an API server. `mlplane.k8s.render` turns a `ModelDeployment` into the objects a
cluster runs (re-exported here); `mlplane.k8s.crds` generates the CustomResourceDefinitions
(`python -m mlplane.k8s.crds`). Applying objects is the operator's (or CLI's) job.
"""

from mlplane.k8s.render import ResolvedArtifact, effective_runtime, render

__all__ = ["ResolvedArtifact", "effective_runtime", "render"]
