"""One place for image names and tags (mlplane.images): the chart, render and ingest use it, and an
image reference without a tag is refused by the chart's schema and by `mlplane cluster install --dry-run`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import helm_python
import pytest
import yaml

from mlplane import __version__, images
from mlplane._generated import REPO_ROOT
from mlplane.k8s import ingest
from mlplane.k8s.render import DEFAULT_RAY_IMAGE

CHART = REPO_ROOT / "charts" / "mlplane"


def _render(values: dict | None = None) -> list[dict]:
    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render(copy.deepcopy(values or {}), name="mlplane", namespace="mlplane", is_install=True)
    return [doc for path, text in manifests.items() if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def _images_by_object(objs: list[dict]) -> dict[str, str]:
    out = {}
    for o in objs:
        spec = o.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec)
        for c in pod.get("containers", []):
            out[f"{o['kind']}/{o['metadata']['name']}/{c['name']}"] = c["image"]
    return out


def test_every_image_is_ghcr_mlplane_at_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert images.TAG == __version__ == chart["appVersion"]
    containerfiles = (REPO_ROOT / "images").glob("*.Containerfile")
    assert set(images.ALL) == {p.name.removesuffix(".Containerfile") for p in containerfiles}
    for name, ref in images.ALL.items():
        assert ref == f"ghcr.io/mlplane/{name}:{__version__}" and images.is_tagged(ref)
    assert f"ghcr.io/mlplane/mlplane-ray:{__version__}-gpu" == images.RAY_GPU


def test_the_chart_deploys_exactly_mlplane_images() -> None:
    found = _images_by_object(_render())
    assert found["Deployment/mlplane-operator/operator"] == images.OPERATOR
    assert found["Deployment/mlplane-mlflow/mlflow"] == images.MLFLOW
    assert found["ClusterServingRuntime/mlplane-mlflow/kserve-container"] == images.SERVING
    assert found["ClusterServingRuntime/mlplane-triton/kserve-container"] == images.TRITON
    mlplane_owned = {ref.rsplit(":", 1)[0] for ref in images.ALL.values()}
    for where, image in found.items():  # anything else is third party and pinned (the helm test's curl)
        assert image.rsplit(":", 1)[0] in mlplane_owned or where.startswith("Pod/"), (where, image)


def test_render_and_ingest_default_to_mlplane_images() -> None:
    assert DEFAULT_RAY_IMAGE == images.RAY
    assert ingest.DEFAULT_INGEST_IMAGE == images.INGEST == ingest.IngestOptions().image


@pytest.mark.parametrize(("ref", "tagged"), [
    ("ghcr.io/mlplane/mlplane-serving:0.1.0", True),
    ("registry.local:5000/team/server:v2", True),
    ("nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64, True),
    ("ghcr.io/mlplane/mlplane-serving:0.1.0@sha256:" + "b" * 64, True),
    ("ghcr.io/mlplane/mlplane-serving", False),
    ("registry.local:5000/team/server", False),
    ("ghcr.io/mlplane/mlplane-serving:", False),
    ("ghcr.io/mlplane/mlplane-serving:0.1.0 ", False),
])
def test_a_reference_is_tagged_only_with_a_tag_or_digest(ref: str, tagged: bool) -> None:
    assert images.is_tagged(ref) is tagged


UNTAGGED = [
    ({"serving": {"mlflow": {"image": "ghcr.io/mlplane/mlplane-serving"}}}, "serving.mlflow.image"),
    ({"serving": {"triton": {"image": "registry.local:5000/triton"}}}, "serving.triton.image"),
    ({"operator": {"image": {"repository": "ghcr.io/mlplane/mlplane-operator:0.1.0"}}}, "operator.image.repository"),
    ({"mlflow": {"image": {"tag": "v1 latest"}}}, "mlflow.image.tag"),
]


@pytest.mark.parametrize(("values", "path"), UNTAGGED)
def test_the_chart_schema_refuses_an_untagged_image(values: dict, path: str) -> None:
    with pytest.raises(Exception) as raised:
        _render(values)
    message = str(raised.value)
    assert "values don't meet the specifications of the schema" in message and path.split(".")[-1] in message


@pytest.mark.parametrize(("values", "path"), UNTAGGED)
def test_cluster_install_dry_run_refuses_an_untagged_image(tmp_path: Path, values: dict, path: str) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values), encoding="utf-8")
    env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "200", "NO_COLOR": "1",
           "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    proc = subprocess.run([sys.executable, "-m", "mlplane", "cluster", "install", "--dry-run", "--values", str(file)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}: String should match pattern" in " ".join(proc.stderr.split()), proc.stderr
