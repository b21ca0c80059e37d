"""Generate the committed JSON Schemas: `python -m mlplane.spec.schema_gen [--check]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

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
    parser = argparse.ArgumentParser(prog="python -m mlplane.spec.schema_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed schemas are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        for path in stale:
            print(f"{path} is out of date with the spec models", file=sys.stderr)
        print("run `python -m mlplane.spec.schema_gen` and commit the result", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
