"""The evaluation drawn and tabulated: quality against data seen (the paper's Fig. 4) and the
table of figures after each stage, for the probe and for the harness's benchmarks."""

from __future__ import annotations

import io

from pipelines.markdown import table

COLUMNS = ("caption_accuracy", "shape_accuracy", "colour_accuracy", "text_accuracy",
           "grounding_accuracy", "heldout_loss", "image_gain", "text_perplexity")  # fmt: skip


def milestones_png(points: list[dict], chance: float | None = None) -> bytes:
    """Caption accuracy and held-out loss against samples seen, one colour per stage.

    Args:
        points: {"stage", "samples_seen" (cumulative over the campaign), "caption_accuracy",
            "heldout_loss"} in campaign order; the initial model is stage "init".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    stages = list(dict.fromkeys(p["stage"] for p in points))
    for axis, key, label in ((axes[0], "caption_accuracy", "held-out caption accuracy"),
                             (axes[1], "heldout_loss", "held-out next-token loss")):  # fmt: skip
        previous = None
        for stage in stages:
            mine = [p for p in points if p["stage"] == stage]
            line = ([previous] if previous else []) + mine  # curves join across stages
            axis.plot([p["samples_seen"] for p in line], [p[key] for p in line], marker="o",
                      label=stage)  # fmt: skip
            previous = mine[-1]
        if key == "caption_accuracy" and chance is not None:
            axis.axhline(chance, color="grey", linestyle="--", label="chance")
        axis.set_xlabel("training samples seen")
        axis.set_title(label)
        axis.legend(fontsize=8)
    return _png(figure)


def harness_columns(rows) -> list[tuple[str, str]]:
    """(task, metric) pairs in the order lmms-eval reported them, over every row's `harness`."""
    pairs = {}
    for figures in rows:
        for task, metrics in figures.get("harness", {}).items():
            pairs.update({(task, metric): None for metric in metrics})
    return list(pairs)


def harness_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per checkpoint, one column per harness task and metric."""
    columns = harness_columns(rows.values())
    cells = [[name, *(_cell(figures.get("harness", {}).get(task, {}).get(metric))
                      for task, metric in columns)] for name, figures in rows.items()]  # fmt: skip
    return table(["checkpoint", *(f"{task} {metric}" for task, metric in columns)], cells,
                 "l" + "r" * len(columns))  # fmt: skip


def _cell(value) -> str:
    return "" if value is None else f"{value:.3f}"


def benchmarks_png(points: list[dict]) -> bytes:
    """Every harness benchmark against samples seen: one line per task (its first metric), a
    dotted line where each stage begins (the paper's Fig. 4 for real benchmarks).

    Args:
        points: {"stage", "samples_seen", "harness": {task: {metric: value}}} in campaign order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    firsts = {}
    for task, metric in harness_columns(points):
        firsts.setdefault(task, metric)
    for task, metric in firsts.items():
        mine = [p for p in points if metric in p.get("harness", {}).get(task, {})]
        axis.plot([p["samples_seen"] for p in mine], [p["harness"][task][metric] for p in mine],
                  marker="o", label=f"{task} {metric}")  # fmt: skip
    starts = {}  # a stage starts where the one before it ended
    for before, point in zip(points, points[1:]):
        if point["stage"] != before["stage"]:
            starts.setdefault(point["stage"], before["samples_seen"])
    for stage, start in starts.items():
        axis.axvline(start, color="grey", linestyle=":", linewidth=1)
        axis.text(start, 1.0, f" {stage}", transform=axis.get_xaxis_transform(), fontsize=8,
                  va="top")  # fmt: skip
    axis.set_xlabel("training samples seen")
    axis.set_title("benchmarks (lmms-eval) against data seen")
    axis.legend(fontsize=8)
    return _png(figure)


def evaluation_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per evaluated checkpoint ({name: figures})."""
    cells = [[name, *(f"{figures[c]:.3f}" for c in COLUMNS)] for name, figures in rows.items()]
    return table(["checkpoint", *COLUMNS], cells, "l" + "r" * len(COLUMNS))


def _png(figure) -> bytes:
    """The figure as PNG bytes, closed (figures drawn in a long run must not pile up)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
