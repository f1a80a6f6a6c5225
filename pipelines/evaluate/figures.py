"""The evaluation drawn and tabulated: quality against data seen (the paper's Fig. 4) and the
table of figures after each stage."""

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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def evaluation_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per evaluated checkpoint ({name: figures})."""
    cells = [[name, *(f"{figures[c]:.3f}" for c in COLUMNS)] for name, figures in rows.items()]
    return table(["checkpoint", *COLUMNS], cells, "l" + "r" * len(COLUMNS))
