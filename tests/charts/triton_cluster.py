"""The cluster's model-server containers as KServe 0.20 builds them: the chart's ClusterServingRuntime
(`mlplane-triton`, `mlplane-mlflow`) merged with the InferenceService mlplane's render gives it. Shared by
test_triton_runtime_chart.py, test_kserve_runtime_chart.py and tests/security/test_triton_cluster_limits.py
(which runs the Triton container's command)."""

from __future__ import annotations

import copy
from typing import Any

from chart_helpers import find, scenario_objects

from mlplane.k8s import ResolvedArtifact
from mlplane.k8s import render as render_deployment
from mlplane.spec import ModelDeployment, Platform

Obj = dict[str, Any]
ARTIFACT = ResolvedArtifact(registry_version="1", storage_uri="s3://mlflow-artifacts/1/abc/artifacts/triton-repository/1/x")


def serving_runtime(name: str) -> Obj:
    """The spec of the chart's ClusterServingRuntime `name` (default values)."""
    return find(scenario_objects("default"), "ClusterServingRuntime", name)["spec"]


def triton_runtime() -> Obj:
    return serving_runtime("mlplane-triton")


def triton_isvc(name: str = "iris", max_request_bytes: int = 1 << 20, grace_period_s: int = 7) -> Obj:
    """The InferenceService mlplane renders for a `runtime: triton` deployment."""
    return rendered_isvc("triton", name, max_request_bytes, grace_period_s)


def rendered_isvc(runtime: str, name: str = "iris", max_request_bytes: int = 1 << 20, grace_period_s: int = 7) -> Obj:
    """The InferenceService mlplane renders for a deployment of `runtime` under a Platform with these limits."""
    dep = ModelDeployment.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment",
                                          "metadata": {"name": name},
                                          "spec": {"model": "models:/iris/1", "runtime": runtime}})
    platform = Platform.model_validate({"apiVersion": "mlplane.io/v1alpha1", "kind": "Platform",
                                        "metadata": {"name": "default"},
                                        "spec": {"serving": {"maxRequestBytes": max_request_bytes,
                                                             "gracePeriodSeconds": grace_period_s}}})
    (isvc,) = [o for o in render_deployment(dep, platform, ARTIFACT) if o["kind"] == "InferenceService"]
    return isvc


def predictor_container(runtime: Obj, isvc: Obj) -> Obj:
    """KServe's merge of the runtime's container with the predictor's model (utils.MergeRuntimeContainers):
    the model's args are appended to the runtime's, its env is added, the rest is the runtime's."""
    (container,) = copy.deepcopy(runtime["containers"])
    model = isvc["spec"]["predictor"]["model"]
    container["args"] = [*container.get("args", []), *model.get("args", [])]
    container["env"] = [*container.get("env", []), *model.get("env", [])]
    return container
