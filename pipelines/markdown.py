"""Markdown for reports (terminal, report files, Prefect artifacts): one table writer and one
number format, so every report reads alike and a cell holding `|` (alt-texts do) stays one cell."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def human(x: float) -> str:
    """1234567 -> 1.23M (k, M, B, T); below a thousand, the integer."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f}{unit}"
    return f"{x:.0f}"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence], align: str = "") -> str:
    """A markdown table; `align` has one letter per column, `l` or `r` (default `l`)."""
    align = align.ljust(len(header), "l")
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]  # fmt: skip
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
