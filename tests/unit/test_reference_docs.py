"""The committed reference docs match a fresh render from the code, and cover every field and command."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from mlplane.cli import reference as cli_reference
from mlplane.cli.main import app
from mlplane.spec import ModelDeploymentSpec, PlatformSpec
from mlplane.spec import reference as spec_reference

STALE = "stale: run `make docs` (or `python -m {}`) and commit the result"


def test_committed_spec_reference_is_current() -> None:
    committed = spec_reference.DOC_PATH.read_text(encoding="utf-8")
    assert committed == spec_reference.render(), STALE.format("mlplane.spec.reference")


def test_committed_cli_reference_is_current() -> None:
    committed = cli_reference.DOC_PATH.read_text(encoding="utf-8")
    assert committed == cli_reference.render(), STALE.format("mlplane.cli.reference")


@pytest.mark.parametrize("spec_model", [ModelDeploymentSpec, PlatformSpec], ids=lambda m: m.__name__)
def test_spec_reference_lists_every_spec_field(spec_model: type) -> None:
    text = spec_reference.render()
    for name, info in spec_model.model_fields.items():
        assert f"| `spec.{info.alias or name}` |" in text, name


def test_spec_reference_types_and_defaults() -> None:
    text = spec_reference.render()
    assert "| `spec.autoscaling.maxReplicas` | integer ≥ 1 | `1` |" in text
    assert "| `spec.runtime` | one of: `kserve`, `triton`, `ray` | `kserve` |" in text
    assert "| `spec.gpuNodePool.tolerations` | list of Toleration |" in text
    assert ("| `metadata.labels` | map of string matching `^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`, "
            "at most 63 characters | `{}` |") in text
    assert "| `spec.model` | string | **required** |" in text
    assert "| `spec.retrieval.topK` | integer from 1 to 100 | `4` |" in text
    assert "| `spec.resources.requests.cpu` | quantity | unset |" in text
    assert "When `scaleDown` is left out it is `{stabilizationWindowSeconds: 300}`" in text
    # status is described in one line, not field by field
    assert "`status` is written by runtimes" in text
    assert "status.conditions" not in text


def test_spec_reference_embeds_examples_verbatim() -> None:
    text = spec_reference.render()
    for _, example in spec_reference.KINDS:
        assert (spec_reference.REPO_ROOT / example).read_text(encoding="utf-8") in text


def test_cli_reference_lists_every_command_and_option() -> None:
    text = cli_reference.render()
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="mlplane")
    names = group.list_commands(ctx)
    assert {"version", "validate", "up", "down", "status", "deploy", "undeploy", "promote", "logs"} <= set(names)
    for name in names:
        assert f"## `mlplane {name}`" in text
        assert f"Usage: mlplane {name} " in text
        for param in group.get_command(ctx, name).params:
            assert f"`{param.opts[0]}`" in text, (name, param.name)


def test_cli_reference_has_no_rich_markup() -> None:
    text = cli_reference.render()
    for tag in ("[bold", "[/]", "[green", "[red"):
        assert tag not in text


def test_plain_strips_rich_markup_only() -> None:
    assert cli_reference.plain("[bold]up[/] [bold red]now[/bold red]") == "up now"
    assert cli_reference.plain("dir [default: ./.mlplane].") == "dir [default: ./.mlplane]."
    assert cli_reference.plain(r"\[bold] stays") == "[bold] stays"


def test_md_text_escapes_table_breakers() -> None:
    assert spec_reference.md_text("a | b <c> `<d>`") == "a \\| b \\<c\\> `<d>`"


@pytest.mark.parametrize("module", [spec_reference, cli_reference], ids=lambda m: m.__name__)
def test_check_mode(module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert module.main(["--check"]) == 0
    monkeypatch.setattr(module, "DOC_PATH", tmp_path / "docs" / "reference.md")
    assert module.main(["--check"]) == 1
    assert "is stale: run `python -m mlplane" in capsys.readouterr().err
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
    module.DOC_PATH.write_text("edited by hand\n", encoding="utf-8")
    assert module.main(["--check"]) == 1
