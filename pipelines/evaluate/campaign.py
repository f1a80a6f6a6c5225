"""The campaign's evaluation: every checkpoint it made (init, each stage's data milestones and
final), the quality-against-data figure and the table, written under `reports/eval/`."""

from __future__ import annotations

from pipelines import storage
from pipelines.evaluate.evaluate import EvalOptions
from pipelines.evaluate.figures import evaluation_table, milestones_png
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


def evaluate_campaign(layout: RunLayout, train: TrainOptions, probe: str,
                      options: EvalOptions) -> dict:  # fmt: skip
    """Evaluates every checkpoint of the campaign (recorded: redone only for new weights).

    Returns:
        {"figures": {name: figures}, "points": the milestone curve, "chance": chance caption
        accuracy, "figure": the PNG's URL, "table": markdown, "stages": {stage: final figures}}.
    """
    from pipelines.evaluate.evaluate import load_probe, truth_of

    checkpoints = campaign_checkpoints(layout, train)
    folder = layout.evaluations()
    figures = evaluate_checkpoints(folder, {c["name"]: c["weights"] for c in checkpoints}, probe,
                                   options)  # fmt: skip
    rows, _ = load_probe(probe, options)
    chance = chance_accuracy([truth_of(r) for r in rows])
    points = [{"name": c["name"], "stage": c["stage"], "samples_seen": seen,
               **{k: v for k, v in figures[c["name"]].items() if isinstance(v, float)}}
              for c, seen in zip(checkpoints, _samples_seen(layout, checkpoints))]  # fmt: skip
    png = storage.join(folder, "milestones.png")
    storage.write_bytes(milestones_png(points, chance), png)
    finals = {name: figures[name] for name in ["init", *(s.name for s in train.stages)]}
    table = evaluation_table(finals)
    storage.write_bytes(table.encode(), storage.join(folder, "evaluation.md"))
    return {"figures": figures, "points": points, "chance": chance, "figure": png,
            "table": table, "stages": finals}  # fmt: skip


def accuracy_line(report: dict) -> str:
    """`caption_accuracy: init <a> S1.1 <a> ...`: the campaign in one line."""
    parts = [f"{name} {figures['caption_accuracy']:.3f}"
             for name, figures in report["stages"].items()]  # fmt: skip
    return "caption_accuracy: " + " ".join(parts)
