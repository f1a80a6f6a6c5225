"""`evip status`: per step and source, units complete / total, settings match, last error.

Reads only the step table (`flows/steps/`) and the completion records; never runs anything.
"""

from __future__ import annotations

from flows import steps as step_table
from flows.config import RunConfig
from flows.steps import Step
from pipelines.completion import CompletionLog, changed_keys, settings_hash
from pipelines.layout import RunLayout
from pipelines.markdown import table


def step_status(step: Step, config: RunConfig, layout: RunLayout, source: str | None) -> dict:
    """How far one step is for one source (or the run)."""
    log = CompletionLog(step.records_folder(config, layout, source))
    records, units = log.records(), step.units(config, layout, source)
    complete, stale, changed = 0, 0, set()
    shared = None if step.settings_per_unit else step.settings(config, layout, source, None)
    for unit in units if units is not None else sorted(records):
        record = records.get(unit)
        if record is None:
            continue
        wanted = step.settings(config, layout, source, unit) if step.settings_per_unit else shared
        if wanted is not None and record["settings_hash"] == settings_hash(wanted):
            complete += 1
        else:
            stale += 1
            if wanted is not None:
                changed.update(changed_keys(record["settings"], wanted))
    error = log.last_error(step.name)
    return {"step": step.name, "source": source or "(run)", "complete": complete,
            "total": None if units is None else len(units), "stale": stale,
            "changed": sorted(changed), "error": error}  # fmt: skip


def run_status(config: RunConfig) -> list[dict]:
    layout = RunLayout(config.run_root)
    return [step_status(step, config, layout, source)
            for step in step_table.STEPS for source in step.sources(config)]  # fmt: skip


def _state(row: dict) -> str:
    if row["stale"]:
        changed = ", ".join(row["changed"][:4]) or "?"
        return f"{row['stale']} made with other settings ({changed}): rerun redoes them"
    if row["total"] is None:
        return "waiting for earlier steps"
    if row["complete"] == row["total"]:
        return "complete"
    return "not started" if row["complete"] == 0 else "in progress"


def status_table(rows: list[dict]) -> str:
    """Markdown table: one row per step and source."""
    cells = []
    for row in rows:
        total = "?" if row["total"] is None else row["total"]
        error = row["error"]
        message = "-" if not error else f"{error['at']}: {error['error'].strip().splitlines()[-1]}"
        cells.append([row["step"], row["source"], f"{row['complete']} / {total}", _state(row),
                      message[:120]])  # fmt: skip
    return table(["step", "source", "units complete", "state", "last error"], cells, "llrll")
