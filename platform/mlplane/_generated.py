"""Generated files committed to the repo: write them, or check that the committed copy is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def generator_main(command: str, description: str, render: Callable[[], Mapping[Path, str]],
                   argv: list[str] | None = None) -> int:
    """``COMMAND`` writes what ``render`` returns; ``COMMAND --check`` exits 1 when a file is stale."""
    parser = argparse.ArgumentParser(prog=command, description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(path)}")
    for path in stale:
        print(f"{_shown(path)} is stale: run `{command}` (or `make docs schemas`) and commit the result",
              file=sys.stderr)
    return 1 if stale else 0
