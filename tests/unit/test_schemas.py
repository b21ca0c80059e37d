"""The committed JSON Schemas match the models, and the examples validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlplane.spec import schema_gen

EXAMPLES = Path(__file__).parents[2] / "examples"
GOOD = Path(__file__).parents[1] / "fixtures" / "specs" / "good"


@pytest.mark.parametrize("path", sorted(schema_gen.generate()), ids=lambda p: p.name)
def test_committed_schema_is_current(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == schema_gen.generate()[path], (
        "stale schema: run `python -m mlplane.spec.schema_gen` and commit the result")


def test_check_mode_passes() -> None:
    assert schema_gen.main(["--check"]) == 0


def test_schemas_describe_every_field() -> None:
    for text in schema_gen.generate().values():
        schema = json.loads(text)
        assert schema["required"][:2] == ["apiVersion", "kind"]
        for name, definition in [("root", schema), *schema["$defs"].items()]:
            assert definition.get("additionalProperties") is False, name
            for field, prop in definition.get("properties", {}).items():
                assert prop.get("description"), f"{name}.{field} has no description"


def _documents() -> list[tuple[str, dict]]:
    paths = [*sorted(EXAMPLES.glob("*/*.yaml")), *sorted(GOOD.glob("*.yaml"))]
    return [(p.name, d) for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def test_examples_validate_against_json_schema() -> None:
    import jsonschema
    files = {"Platform": "platform.schema.json", "ModelDeployment": "modeldeployment.schema.json"}
    for name, doc in _documents():
        schema = json.loads((schema_gen.SCHEMA_DIR / files[doc["kind"]]).read_text())
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]
        assert not errors, (name, errors)


def test_check_mode_fails_on_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(schema_gen, "SCHEMA_DIR", tmp_path)
    assert schema_gen.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert schema_gen.main([]) == 0
    assert schema_gen.main(["--check"]) == 0
