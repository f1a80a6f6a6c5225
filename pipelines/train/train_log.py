"""What a stage's rank 0 records while it trains: TensorBoard events, metric history, loss PNG.

The history travels in the stage's checkpoints (it is small: one row per optimiser step), so a
resumed stage still draws its whole curve; steps redone after a resume replace the old rows.
TensorBoard writes to a local folder that is the run's folder for a local root, or is copied to
the object store at every checkpoint and at the end.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from pipelines import storage

SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s", "packing_efficiency")
PROGRESS = "progress.json"


class TrainLog:
    """Rank 0's log of one stage, under `url` (reports/train/<stage>/)."""

    def __init__(self, url: str, stage: str, history: list[dict] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.url, self.stage = url, stage
        self.history = list(history or [])
        local = storage.is_local(url)
        self._events = Path(url, "tensorboard") if local else Path(tempfile.mkdtemp())
        self._remote = None if local else storage.join(url, "tensorboard")
        if self._remote and storage.exists(self._remote):
            storage.get_folder(self._remote, self._events)
        self._writer = SummaryWriter(str(self._events))

    def add(self, metrics: dict) -> None:
        step = metrics["step"]
        self.history = [row for row in self.history if row["step"] < step] + [metrics]
        for name in SCALARS:
            if metrics.get(name) is not None:
                self._writer.add_scalar(f"{self.stage}/{name}", metrics[name], step)

    def write_progress(self, metrics: dict, steps: int) -> None:
        """`progress.json`: where the stage is now, for whoever watches the run (the Prefect
        task's progress artifact) while `metrics.jsonl` is only written at the end."""
        mean = metrics.get("mean_step_seconds") or 0.0
        progress = {"stage": self.stage, "step": metrics["step"], "steps": steps,
                    "loss": metrics.get("loss"), "samples_seen": metrics.get("samples_seen"),
                    "eta_seconds": mean * (steps - metrics["step"])}  # fmt: skip
        storage.write_json(progress, storage.join(self.url, PROGRESS))

    def sync(self) -> None:
        """Flushes events (and copies them to the object store for a remote run)."""
        self._writer.flush()
        if self._remote:
            storage.put_folder(self._events, self._remote)

    def finish(self) -> dict:
        """Writes `metrics.jsonl` and `loss.png`; returns their URLs."""
        self.sync()
        self._writer.close()
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        metrics_url = storage.join(self.url, "metrics.jsonl")
        storage.write_bytes(lines.encode(), metrics_url)
        png = storage.join(self.url, "loss.png")
        storage.write_bytes(loss_png(self.history, self.stage), png)
        return {"metrics": metrics_url, "loss_png": png}


def loss_png(history: list[dict], title: str) -> bytes:
    """Loss and learning rate against optimiser steps, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(steps, [row["loss"] for row in history], color="tab:blue", label="loss")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("loss", color="tab:blue")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [row["lr"] for row in history], color="tab:orange", alpha=0.6)
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title(f"{title}: training loss")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
