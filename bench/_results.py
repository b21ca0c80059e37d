"""Shared by the benchmarks: a results table of ratios against goals, and writing one ``## ...`` section
of bench/RESULTS.md while keeping the others."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(heading: str, body: str, results: Path = RESULTS) -> None:
    """Write ``heading`` + ``body`` into ``results``: replace that section if present, else append."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    results.write_text(text)


def run_context() -> str:
    """When and where the benchmark ran: the first words of every section."""
    return (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}.")


class Report:
    """Rows of ``label columns | ratio | goal | met``; a row without a goal is reported, not judged."""

    def __init__(self, *columns: str):
        self.columns = columns
        self.rows: list[str] = []
        self.verdicts: list[bool] = []

    def add(self, *cells: str, ratio: float, goal: str = "report", ok: bool | None = None) -> None:
        if ok is not None:
            self.verdicts.append(ok)
        met = "—" if ok is None else ("yes" if ok else "NO")
        self.rows.append("| " + " | ".join([*cells, f"{ratio:.2f}", goal, met]) + " |")

    def markdown(self) -> str:
        head = [*self.columns, "goal", "met"]
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *self.rows])

    @property
    def all_met(self) -> bool:
        return all(self.verdicts)

    def verdict(self) -> str:
        return "all goals met" if self.all_met else "SOME GOALS MISSED"
