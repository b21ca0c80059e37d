"""Render the charts with the real Helm engine (helm-python-sdk) and look at the objects."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import yaml
from k8s_schema_helpers import REPO_ROOT

K8S_VERSION = "1.32"
CHARTS = REPO_ROOT / "charts"
CHART = CHARTS / "mlplane"
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
TFTPL = REPO_ROOT / "infra" / "terraform" / "modules" / "gpu-cluster" / "templates" / "mlplane-values.yaml.tftpl"
CUSTOM_GROUPS = ("serving.kserve.io/",)
RELEASE, NAMESPACE = "mlplane", "mlplane"

Obj = dict[str, Any]


def scenario_values(scenario: str) -> Obj:
    return yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text(encoding="utf-8")) or {}


def render(values: Obj | None = None, *, name: str = RELEASE, chart_dir: Path = CHART) -> dict[str, str]:
    with helm_python.Chart.load(str(chart_dir)) as chart:
        return chart.render(copy.deepcopy(values or {}), name=name, namespace=NAMESPACE, is_install=True)


def objects(manifests: dict[str, str]) -> list[Obj]:
    return [doc for path, text in manifests.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


@cache
def rendered_scenario(scenario: str) -> tuple[dict[str, str], list[Obj]]:
    manifests = render(scenario_values(scenario))
    return manifests, objects(manifests)


def scenario_objects(scenario: str) -> list[Obj]:
    return copy.deepcopy(rendered_scenario(scenario)[1])


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {[(o['kind'], o['metadata']['name']) for o in objs]}"
    return matches[0]


def pod_specs(objs: list[Obj]) -> list[tuple[str, Obj]]:
    out = []
    for o in objs:
        if o["kind"] == "Deployment":
            out.append((f"Deployment/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((f"Pod/{o['metadata']['name']}", o["spec"]))
    return out
