"""Generate the CLI reference: `python -m mlplane.cli.reference [--check]` writes docs/cli-reference.md.

Everything comes from the Typer app (`mlplane.cli.main:app`): command help, usage lines, arguments and
options with their types, defaults and help, so the page cannot drift from `mlplane --help`.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
from typing import Any

import typer
from rich.errors import StyleSyntaxError
from rich.style import Style

from mlplane._generated import generator_main
from mlplane.cli.main import app
from mlplane.spec.reference import REPO_ROOT, md_table, md_text

DOC_PATH = REPO_ROOT / "docs" / "cli-reference.md"
COMMAND = "python -m mlplane.cli.reference"
PROG = "mlplane"
# Usage lines wrap at the terminal width; a fixed one keeps the output the same on every machine.
WIDTH = 100

# Rich's markup tag syntax (rich.markup.RE_TAGS): optional escaping backslashes, then `[tag]`.
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")
_TYPE_NAMES = {"str": "text", "int": "integer", "float": "number", "bool": "boolean", "path": "path"}


def plain(text: str) -> str:
    """Help text without Rich markup: style tags (`[bold]`, `[/]`, `[link=…]`) go, other brackets stay.

    Brackets that are not a valid style, like `[default: ./.mlplane]`, are kept as written.
    """

    def replace(match: re.Match[str]) -> str:
        backslashes, tag = match.group(1), match.group(2)
        if len(backslashes) % 2:  # an escaped bracket is literal text
            return backslashes[:-1] + f"[{tag}]"
        if tag.startswith(("/", "@", "link")):
            return backslashes
        try:
            Style.parse(tag)
        except StyleSyntaxError:
            return match.group(0)
        return backslashes

    return _TAG.sub(replace, text)


def _help(text: str | None) -> str:
    """Command help as click shows it: dedented, cut at a form feed, `\\b` markers dropped."""
    text = inspect.cleandoc(text or "").split("\f", 1)[0]
    return plain("\n".join(line for line in text.splitlines() if line.strip() != "\b")).strip()


def _paragraphs(text: str) -> str:
    """Markdown paragraphs from help text: lines of a paragraph joined, markdown characters escaped."""
    return "\n\n".join(md_text(" ".join(p.split())) for p in text.split("\n\n") if p.strip())


def _summary(text: str) -> str:
    return md_text(" ".join(text.split("\n\n", 1)[0].split()))


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value)


def _type(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    desc = param.type_descriptor
    if desc.is_choice:
        text = "one of: " + ", ".join(f"`{_value(c)}`" for c in desc.choices)
    else:
        label = param.display_type(ctx).strip("<>")
        text = _TYPE_NAMES.get(label, label)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None:
        text += f" ≥ {low}"
    if high is not None:
        text += f" ≤ {high}"
    if param.nargs != 1 or getattr(param, "multiple", False):
        text = f"one or more: {text}"
    return text


def _default(param: Any, ctx: Any) -> str:
    if param.required:
        return "**required**"
    value = param.get_default(ctx, call=False)
    if getattr(param, "is_flag", False):
        return "on" if value else "off"
    if value is None or value == [] or value == ():
        return "—"
    if callable(value):
        return "(dynamic)"
    return md_text(f"`{_value(value)}`")


def _description(param: Any) -> str:
    text = plain(param.help or "")
    envvar = param.envvar
    if envvar:
        names = [envvar] if isinstance(envvar, str) else list(envvar)
        text += " Environment variable: " + ", ".join(f"`{n}`" for n in names) + "."
    return md_text(text.strip())


def _commands(group: Any, ctx: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(full name, command, parent context)`` of every visible command, sub-commands after their group."""
    found = []
    for leaf in group.list_commands(ctx):
        command = group.get_command(ctx, leaf)
        if command.hidden:
            continue
        name = f"{prefix}{leaf}"
        found.append((name, command, ctx))
        if hasattr(command, "list_commands"):  # a group of sub-commands
            found += _commands(command, ctx.__class__(command, info_name=leaf, parent=ctx), f"{name} ")
    return found


def _command_section(name: str, command: Any, parent_ctx: Any) -> list[str]:
    ctx = parent_ctx.__class__(command, info_name=name.rsplit(" ", 1)[-1], parent=parent_ctx)
    lines = [f"## `{PROG} {name}`", ""]
    if getattr(command, "deprecated", False):
        lines += ["**Deprecated.**", ""]
    lines += [_paragraphs(_help(command.help)), "", "```text", command.get_usage(ctx).strip(), "```", ""]
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name == "option"]
    if arguments:
        rows = [(f"`{p.name}`", md_text(_type(p, ctx)), _default(p, ctx), _description(p))
                for p in arguments]
        lines += ["Arguments:", "", *md_table(("Argument", "Type", "Default", "Description"), rows), ""]
    if options:
        rows = [(", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts]), md_text(_type(p, ctx)),
                 _default(p, ctx), _description(p)) for p in options]
        lines += ["Options:", "", *md_table(("Option", "Type", "Default", "Description"), rows), ""]
    if command.epilog:
        lines += [_paragraphs(plain(inspect.cleandoc(command.epilog))), ""]
    return lines


def render() -> str:
    """The whole of docs/cli-reference.md."""
    group = typer.main.get_command(app)
    root_ctx = group.context_class(group, info_name=PROG, terminal_width=WIDTH, max_content_width=WIDTH)
    commands = _commands(group, root_ctx)
    lines = [
        "# CLI reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the Typer app in `mlplane.cli.main`. "
        "Do not edit by hand: run `make docs`. -->",
        "",
        _paragraphs(_help(group.help)),
        "",
        "```text",
        group.get_usage(root_ctx).strip(),
        "```",
        "",
        "Every command also accepts `--help`. In usage lines `{name}` is a required argument and `[name]` "
        "an optional one.",
        "",
        *md_table(("Command", "Summary"),
                  [(f"[`{n}`](#{PROG}-{n.replace(' ', '-')})", _summary(_help(c.help))) for n, c, _ in commands]),
        "",
    ]
    for name, command, parent_ctx in commands:
        lines += _command_section(name, command, parent_ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    return generator_main(COMMAND, __doc__.splitlines()[0], lambda: {DOC_PATH: render()}, argv)


if __name__ == "__main__":
    sys.exit(main())
