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
    records, units = log.records(), step.unit_settings(config, layout, source)
    complete, stale, changed = 0, 0, set()
    for unit in units if units is not None else sorted(records):
        record = records.get(unit)
        if record is None:
            continue
        wanted = None if units is None else units[unit]
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
    rows = [step_status(step, config, layout, source)
            for step in step_table.STEPS for source in step.sources(config)]  # fmt: skip
    return chain_upstream(rows, {step.name: step for step in step_table.STEPS})


def _complete(row: dict) -> bool:
    return not row["stale"] and row["total"] is not None and row["complete"] == row["total"]


def chain_upstream(rows: list[dict], steps: dict[str, Step]) -> list[dict]:
    """Sets each row's `upstream`: the first step it reads from, directly or not, that is not
    complete (None when all are). Settings chain by content, so a complete step after one that
    is not may still be redone when that one is: its records match inputs that may change. A
    per-source step reads its own source's rows; a run-wide one every source's."""
    seen: dict[str, list[dict]] = {}
    for row in rows:
        step = steps[row["step"]]
        inputs = [r for name in step.inputs for r in seen.get(name, [])
                  if not step.per_source or r["source"] in (row["source"], "(run)")]  # fmt: skip
        row["upstream"] = next((r["waits_on"] for r in inputs if r["waits_on"]), None)
        row["waits_on"] = row["upstream"] or (None if _complete(row) else row["step"])
        seen.setdefault(row["step"], []).append(row)
    for row in rows:
        del row["waits_on"]
    return rows


def _state(row: dict) -> str:
    if _complete(row) and row.get("upstream"):
        return f"complete, but {row['upstream']} is not: a rerun may redo it"
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
