"""What happens around a training step, one concern per callback (OLMo-core style): checkpoints
(`Checkpointer`, `restore`), weights exported at milestones and at the end (`MilestoneExporter`),
rank 0's log and progress bar (`MetricsLog`) and metric reports to Ray Train (`Reporter`).

A checkpoint holds, per rank, the DeepSpeed shard and one JSON: the loader's state after the last
pack the step consumed, the CPU (and CUDA) RNG, the step, rank 0's metric history and the samples
seen, so the batches after a resume are the ones an uninterrupted run would see.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from pipelines.train.export import export_weights
from pipelines.train.schedule import TrainStage, milestone_name
from pipelines.train.trainer import Callback, TrainState

LOADER_STATE = "loader-rank{rank}.json"


def restore(engine, packs, rank: int) -> TrainState:
    """The state to start from: Ray Train's latest checkpoint (engine and `packs` loaded from it),
    or a fresh one."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainState()
    with checkpoint.as_directory() as folder:
        engine.load_checkpoint(folder, tag="ds")
        saved = json.loads((Path(folder) / LOADER_STATE.format(rank=rank)).read_text())
    packs.load_state_dict(saved["loader"])
    torch.set_rng_state(torch.tensor(saved["torch_rng"], dtype=torch.uint8))
    if "cuda_rng" in saved and torch.cuda.is_available():  # this worker's own device only
        torch.cuda.set_rng_state(torch.tensor(saved["cuda_rng"], dtype=torch.uint8), engine.device)
    return TrainState(step=saved["step"], samples_seen=saved.get("samples_seen", 0),
                      history=saved.get("history", []), resumed_from=saved["step"])  # fmt: skip


class Checkpointer(Callback):
    """Every `checkpoint_every` steps and at the stage's end, a Ray Train checkpoint reported with
    the step's metrics; `sync` (rank 0's log) is flushed before it."""

    def __init__(self, engine, packs, rank: int, stage: TrainStage,
                 sync: Callable[[], None] | None = None):  # fmt: skip
        self.engine, self.packs, self.rank, self.stage, self.sync = engine, packs, rank, stage, sync
        self.cuda = engine.device is not None and torch.device(engine.device).type == "cuda"

    def post_step(self, state: TrainState, metrics: dict) -> None:
        import ray.train

        if state.step % self.stage.checkpoint_every and state.step != self.stage.steps:
            return
        with tempfile.TemporaryDirectory() as folder:
            self.engine.save_checkpoint(folder, tag="ds")
            saved = {"step": state.step, "loader": self.packs.state_dict(),
                     "torch_rng": torch.get_rng_state().tolist(), "history": state.history,
                     "samples_seen": state.samples_seen}  # fmt: skip
            if self.cuda:  # its own device's: a worker may see every GPU of its node
                saved["cuda_rng"] = torch.cuda.get_rng_state(self.engine.device).tolist()
            (Path(folder) / LOADER_STATE.format(rank=self.rank)).write_text(json.dumps(saved))
            if self.sync is not None:
                self.sync()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        state.reported_step = state.step


class Reporter(Callback):
    """The metrics to Ray Train every `every` steps (a barrier across workers: not every step),
    unless the step was already reported with a checkpoint."""

    def __init__(self, every: int):
        self.every = every

    def post_step(self, state: TrainState, metrics: dict) -> None:
        import ray.train

        if state.step % self.every == 0 and state.reported_step != state.step:
            ray.train.report(metrics)
            state.reported_step = state.step


class MilestoneExporter(Callback):
    """The weights in Hugging Face format at the stage's data milestones and, at its end, `final`
    (every rank takes part: ZeRO-3 gathers parameters; rank 0 writes)."""

    def __init__(self, engine, tokenizer, processor, rank: int, stage: TrainStage, folder: str,
                 settings: dict):  # fmt: skip
        self.engine, self.tokenizer, self.processor = engine, tokenizer, processor
        self.rank, self.stage, self.folder, self.settings = rank, stage, folder, settings

    def post_step(self, state: TrainState, metrics: dict) -> None:
        if state.step in self.stage.milestone_steps() and state.step < self.stage.steps:
            self._export(milestone_name(state.step), {**self.settings, "milestone": state.step})

    def post_train(self, state: TrainState) -> None:
        self._export("final", self.settings)

    def _export(self, name: str, settings: dict) -> None:
        export_weights(self.engine, self.tokenizer, self.processor, self.rank, self.folder, name,
                       settings)  # fmt: skip


class MetricsLog(Callback):
    """Rank 0's `TrainLog` (TensorBoard, metrics.jsonl, loss.png) and its progress bar."""

    def __init__(self, url: str, stage: TrainStage, state: TrainState):
        from pipelines.train.train_log import TrainLog

        self.stage = stage
        self.log = TrainLog(url, stage.name, state.history)
        self.progress = _progress(stage, state.step)

    def sync(self) -> None:
        self.log.sync()

    def post_step(self, state: TrainState, metrics: dict) -> None:
        self.log.add(metrics)
        state.history = self.log.history
        if state.step % self.stage.report_every == 0 or state.step == self.stage.steps:
            self.log.write_progress(metrics, self.stage.steps)
        self.progress.update(1)
        self.progress.set_description(f"train {self.stage.name} loss {metrics['loss']:.3f}")

    def post_train(self, state: TrainState) -> None:
        self.log.finish()
        self.progress.close()


def _progress(stage: TrainStage, step: int):
    """A progress bar with ETA, drawn by the Ray driver (not interleaved worker output)."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=stage.steps, desc=f"train {stage.name}")
    bar.update(step)  # a resumed stage starts where its checkpoint was
    return bar
