"""The campaign's evaluation: every checkpoint it made (init, each stage's data milestones and
final), the quality-against-data figure and the table, written under `reports/eval/`."""

from __future__ import annotations

from pipelines import storage
from pipelines.evaluate.evaluate import EvalOptions
from pipelines.evaluate.figures import (
    benchmarks_png,
    evaluation_table,
    harness_table,
    milestones_png,
)
from pipelines.evaluate.job import evaluate_checkpoints
from pipelines.evaluate.scoring import chance_accuracy
from pipelines.layout import RunLayout
from pipelines.outputs import training_logs
from pipelines.train.schedule import TrainOptions, milestone_name


def campaign_checkpoints(layout: RunLayout, train: TrainOptions) -> list[dict]:
    """[{"name", "stage", "step", "weights"}] in campaign order: init, then per stage its
    milestones and its final (named after the stage)."""
    out = [{"name": "init", "stage": "init", "step": 0,
            "weights": layout.init_checkpoint()}]  # fmt: skip
    for stage in train.stages:
        for step in stage.milestone_steps():
            last = step == stage.steps
            out.append({"name": stage.name if last else f"{stage.name}-step{step:06d}",
                        "stage": stage.name, "step": step,
                        "weights": layout.stage_checkpoint(stage.name, "final" if last
                                                           else milestone_name(step))})  # fmt: skip
    return out


def _samples_seen(layout: RunLayout, checkpoints: list[dict]) -> list[int]:
    """Training samples seen by each checkpoint, counted over the whole campaign."""
    seen, offset, stage_rows = [], 0, {}
    for point in checkpoints:
        if point["stage"] == "init":
            seen.append(0)
            continue
        if point["stage"] not in stage_rows:
            offset = seen[-1] if seen else 0
            rows = training_logs(layout, point["stage"]).metrics()
            stage_rows[point["stage"]] = {row["step"]: row for row in rows}
        seen.append(offset + stage_rows[point["stage"]][point["step"]]["samples_seen"])
    return seen


def evaluate_campaign(layout: RunLayout, train: TrainOptions, probe: str | None,
                      options: EvalOptions) -> dict:  # fmt: skip
    """Evaluates every checkpoint of the campaign (recorded: redone only for new weights) on the
    probe (when there is one) and the harness tasks (when configured).

    Returns:
        {"figures": {name: figures}, "points": the milestone curve, "stages": {stage: final
        figures}, "figures_png": {what: PNG URL}, "tables": {what: markdown}} and, with a
        probe, "chance": chance caption accuracy.
    """
    from pipelines.evaluate.evaluate import load_probe, truth_of

    checkpoints = campaign_checkpoints(layout, train)
    folder = layout.evaluations()
    figures = evaluate_checkpoints(folder, {c["name"]: c["weights"] for c in checkpoints}, probe,
                                   options)  # fmt: skip
    points = [{"name": c["name"], "stage": c["stage"], "samples_seen": seen,
               **{k: v for k, v in figures[c["name"]].items() if isinstance(v, (float, dict))}}
              for c, seen in zip(checkpoints, _samples_seen(layout, checkpoints))]  # fmt: skip
    finals = {name: figures[name] for name in ["init", *(s.name for s in train.stages)]}
    report = {"figures": figures, "points": points, "stages": finals, "figures_png": {},
              "tables": {}}  # fmt: skip
    if probe is not None:
        rows, _ = load_probe(probe, options)
        report["chance"] = chance_accuracy([truth_of(r) for r in rows])
        _write(report, folder, "probe", milestones_png(points, report["chance"]),
               evaluation_table(finals))  # fmt: skip
    if options.harness_tasks:
        _write(report, folder, "benchmarks", benchmarks_png(points), harness_table(finals))
    return report


def _write(report: dict, folder: str, what: str, png: bytes, table: str) -> None:
    """Writes one figure and its table beside the records; notes their URLs in the report."""
    names = {"probe": ("milestones.png", "evaluation.md"),
             "benchmarks": ("benchmarks.png", "benchmarks.md")}[what]  # fmt: skip
    report["figures_png"][what] = storage.join(folder, names[0])
    storage.write_bytes(png, report["figures_png"][what])
    storage.write_bytes(table.encode(), storage.join(folder, names[1]))
    report["tables"][what] = table


def accuracy_line(report: dict) -> str:
    """`caption_accuracy: init <a> S1.1 <a> ...`: the campaign in one line (with a probe)."""
    parts = [f"{name} {figures['caption_accuracy']:.3f}"
             for name, figures in report["stages"].items()]  # fmt: skip
    return "caption_accuracy: " + " ".join(parts)
