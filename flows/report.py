"""Run reports: tables people read in a terminal or as Prefect artifacts."""

from __future__ import annotations

from model.param_groups import ParameterCounts


def _human(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def parameter_table(counts: ParameterCounts) -> str:
    """Markdown table of parameters per group, with totals and per-token active counts."""
    rows = ["| group | parameters |", "| --- | ---: |"]
    rows += [f"| {group} | {_human(n)} |" for group, n in counts.by_group.items()]
    rows += [
        f"| **total** | {_human(counts.total)} |",
        f"| active per text token | {_human(counts.active_per_text_token)} |",
        f"| active per visual token | {_human(counts.active_per_visual_token)} |",
        f"| trainable | {_human(counts.trainable)} |",
    ]
    return "\n".join(rows)
