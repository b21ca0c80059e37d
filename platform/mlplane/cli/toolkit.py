"""What every ``mlplane`` command shares: consoles, exit codes, the ``--state-dir`` and ``-o`` options, printing.

Exit codes (one scheme for every command):

- ``0``: done.
- ``1`` (:data:`EXIT_RUNTIME`): the request was fine but something failed while carrying it out (no
  platform running, MLflow or the vector store did not answer, a release did not become ready).
- ``2`` (:data:`EXIT_INPUT`): bad input: an invalid spec or file, a bad flag value, an unknown name.
  Typer's own usage errors exit 2 too.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlplane.core.statedir import STATE_DIR_ENV

EXIT_RUNTIME = 1
EXIT_INPUT = 2

out = Console()
err = Console(stderr=True)


class Output(enum.StrEnum):
    table = "table"
    yaml = "yaml"
    json = "json"


StateDirOpt = typer.Option(None, "--state-dir", envvar=STATE_DIR_ENV,
                           help="Platform state directory (default: ./.mlplane).")


def output_option(default: Output = Output.table) -> Any:
    """The ``-o/--output`` option; commands that print manifests default to yaml (table means yaml there)."""
    what = "Output format." if default is Output.table else "Output format (yaml or json)."
    return typer.Option(default, "--output", "-o", help=what)


OutputOpt = output_option()


def fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the exit to raise: ``raise fail(...) from None``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def emit(data: Any, output: Output, table: Table | None = None) -> None:
    """Print ``data`` as JSON or YAML, or ``table`` (when given) for ``-o table``."""
    if output is Output.json:
        out.print_json(json.dumps(data, default=str))
    elif output is Output.yaml:
        out.print(yaml.safe_dump(data, sort_keys=False), end="", highlight=False)
    elif table is not None:
        out.print(table)


def emit_manifests(objects: dict[str, Any] | list[dict[str, Any]], output: Output) -> None:
    """Kubernetes object(s) as JSON (``-o json``) or a YAML stream, unstyled, for ``kubectl apply -f -``."""
    if output is Output.json:
        out.print_json(json.dumps(objects))
    else:
        sys.stdout.write(yaml.safe_dump_all(objects if isinstance(objects, list) else [objects], sort_keys=False))
