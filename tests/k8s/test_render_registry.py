"""`mlplane render` against a registry that cannot answer, and for model files KServe cannot download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from mlplane.cli.main import app
from mlplane.runtime.local.process import free_port


def render(tmp: Path, spec: dict[str, Any], tracking_uri: str, *extra: str) -> tuple[int, str, str]:
    doc = {"apiVersion": "mlplane.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"}, "spec": spec}
    path = tmp / "iris.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["render", "-f", str(path), "--tracking-uri", tracking_uri,
                                      "--state-dir", str(tmp / "state"), *extra])
    return result.exit_code, result.stdout, result.stderr


def test_render_gives_up_on_an_unreachable_registry(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    code, out, err = render(tmp_path, {"model": "models:/iris@champion"}, dead, "--registry-timeout", "2")
    assert code == 1 and out == ""
    assert f"MLflow at {dead} did not answer within 2s" in err and "check that the URI is right" in err


def test_render_refuses_what_kserve_cannot_download(tmp_path: Path) -> None:
    code, out, err = render(tmp_path, {"model": "file:///srv/models/iris"}, "http://127.0.0.1:1")
    assert code == 2 and out == ""
    assert "spec.model:" in err and "cannot download" in err and "s3" in err
    code, _, err = render(tmp_path, {"model": "s3://bucket/iris", "runtime": "triton"}, "http://127.0.0.1:1")
    assert code == 2 and "runtime triton in the cluster serves registered models only" in err
