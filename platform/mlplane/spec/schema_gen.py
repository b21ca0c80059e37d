"""Generate the committed JSON Schemas: `python -m mlplane.spec.schema_gen [--check]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlplane._generated import generator_main
from mlplane.spec.deployment import ModelDeployment
from mlplane.spec.platform import Platform

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMAS: dict[str, type[BaseModel]] = {
    "platform.schema.json": Platform,
    "modeldeployment.schema.json": ModelDeployment,
}


def schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of one resource; apiVersion and kind are required in files."""
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["required"] = ["apiVersion", "kind", *[r for r in schema.get("required", []) if r not in
                                                   ("apiVersion", "kind")]]
    return schema


def render(model: type[BaseModel]) -> str:
    """The committed text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema_for(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[Path, str]:
    """Every schema file and its expected text."""
    return {SCHEMA_DIR / name: render(model) for name, model in SCHEMAS.items()}


def main(argv: list[str] | None = None) -> int:
    return generator_main("python -m mlplane.spec.schema_gen", __doc__.splitlines()[0], generate, argv)


if __name__ == "__main__":
    sys.exit(main())
