"""Run reports: tables people read in a terminal or as Prefect artifacts."""

from __future__ import annotations

from model.param_groups import ParameterCounts
from pipelines.markdown import human, table


def parameter_table(counts: ParameterCounts) -> str:
    """Markdown table of parameters per group, with totals and per-token active counts."""
    rows = [[group, human(n)] for group, n in counts.by_group.items()]
    rows += [
        ["**total**", human(counts.total)],
        ["active per text token", human(counts.active_per_text_token)],
        ["active per visual token", human(counts.active_per_visual_token)],
        ["trainable", human(counts.trainable)],
    ]
    return table(["group", "parameters"], rows, "lr")


def ingest_figure(report: dict, url: str) -> str:
    """Bar charts of one source's ingest: download outcome by reason, filter outcome by reason.

    Written as a PNG next to the run's other reports (local path or fsspec URL); returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from pipelines import storage

    downloaded = report["downloaded"]
    download = {"downloaded": downloaded["downloaded"], **downloaded["failures"]}
    filtered = {k: v for k, v in report["filtered"].items() if k != "total"}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, (title, counts) in zip(axes, [("download", download), ("filter", filtered)]):
        names = sorted(counts, key=counts.get)
        colours = ["tab:green" if n in ("downloaded", "kept") else "tab:red" for n in names]
        axis.barh(names, [counts[n] for n in names], color=colours)
        axis.set_title(f"{report['source']}: {title}")
        axis.set_xlabel("samples")
        for y, name in enumerate(names):
            axis.annotate(str(counts[name]), (counts[name], y), xytext=(3, 0),
                          textcoords="offset points", va="center")  # fmt: skip
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    storage.write_bytes(buffer.getvalue(), url)
    return str(url)
