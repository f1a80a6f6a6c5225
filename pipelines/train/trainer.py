"""The training step and what it measures (OLMo-core's trainer): forward -> backward -> step over a
stage's packs, then the callbacks; checkpoints, exports, logs and reports are `callbacks.py`.

The loss comes from the supervised positions only (`full_logits=False`): no tokens x vocabulary
logits. Packs come from a `Prefetcher`, so loading overlaps the step; `step_seconds` counts the
compute alone and `wall_seconds` everything between two steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

PACK_KEYS = ("input_ids", "labels", "position_ids", "sample_ids", "loss_weights",
             "attention_mask")  # fmt: skip


@dataclass
class TrainState:
    """What the trainer and its callbacks share; a checkpoint saves and restores it."""

    step: int = 0
    """Optimiser steps done."""
    samples_seen: int = 0
    """Samples trained on, across every worker."""
    history: list[dict] = field(default_factory=list)
    """Rank 0's metrics of every step so far (empty on the other ranks)."""
    resumed_from: int = 0
    """The step this process started from (0 unless it resumed a checkpoint)."""
    reported_step: int = -1
    """The last step whose metrics went to Ray Train (each report is a barrier: once a step)."""


class Callback:
    """One concern of training, called by the trainer at its hooks."""

    def post_step(self, state: TrainState, metrics: dict) -> None:
        """After optimiser step `state.step`, with its metrics."""

    def post_train(self, state: TrainState) -> None:
        """After the stage's last step."""


def stack_packs(packs: list[dict]) -> dict:
    """Packs of one micro-batch as one batch (rows stacked; tiles concatenated)."""
    batch = {k: torch.cat([p[k] for p in packs]) for k in PACK_KEYS}
    tiles = [p["pixel_values"] for p in packs if p["pixel_values"] is not None]
    batch["pixel_values"] = torch.cat(tiles) if tiles else None
    return batch


class Trainer:
    """Runs a stage's optimiser steps on a DeepSpeed engine and calls its callbacks."""

    def __init__(self, engine, optimizer, stage, world: int, callbacks: list[Callback]):
        self.engine, self.optimizer, self.stage = engine, optimizer, stage
        self.accumulation, self.callbacks = stage.accumulation(world), callbacks

    def fit(self, packs, state: TrainState) -> None:
        """Steps from `state.step` to the stage's end, taking packs from `packs`."""
        step_times, last, reporting = [], time.perf_counter(), 0.0
        while state.step < self.stage.steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.stage.lr_at(state.step)
            losses, counts, seconds = [], torch.zeros(3, dtype=torch.float64), 0.0
            for _ in range(self.accumulation):
                batch = stack_packs([next(packs) for _ in range(self.stage.micro_batch)])
                counts += _counts(batch)
                started = time.perf_counter()  # compute only: the loader is measured on its own
                losses.append(self.micro_step(batch))
                seconds += time.perf_counter() - started
            state.step += 1
            step_times.append(seconds)
            metrics = self._metrics(state, losses, counts, seconds, step_times, last, reporting)
            reported_from = time.perf_counter()
            for callback in self.callbacks:
                callback.post_step(state, metrics)
            reporting, last = time.perf_counter() - reported_from, time.perf_counter()
        for callback in self.callbacks:
            callback.post_train(state)

    def micro_step(self, batch: dict) -> float:
        """Forward, backward and (at a gradient-accumulation boundary) the optimiser step."""
        device = self.engine.device
        inputs = {k: None if v is None else v.to(device) for k, v in batch.items()
                  if k != "attention_mask"}  # fmt: skip
        loss = self.engine(**inputs, full_logits=False).loss
        self.engine.backward(loss)
        self.engine.step()
        return loss.item()

    def _metrics(self, state, losses, counts, seconds, step_times, last, reporting) -> dict:
        samples, tokens, capacity = counts.tolist()
        # On the engine's device: NCCL, the GPU workers' only backend, reduces no CPU tensor.
        seen = torch.tensor([samples, tokens], dtype=torch.float64, device=self.engine.device)
        torch.distributed.all_reduce(seen)  # every worker's samples and tokens this step
        state.samples_seen += int(seen[0])
        warm = step_times[1:] or step_times  # the first step of a process warms up
        grad_norm = self.engine.get_global_grad_norm()
        return {"step": state.step, "loss": sum(losses) / len(losses),
                "lr": self.stage.lr_at(state.step - 1),
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens": int(seen[1]), "samples_seen": state.samples_seen,
                "packing_efficiency": tokens / capacity, "step_seconds": seconds,
                "wall_seconds": time.perf_counter() - last,  # with the data's time
                "report_seconds": reporting,  # the previous step's callbacks
                "tokens_per_s": int(seen[1]) / seconds,
                "mean_step_seconds": sum(warm) / len(warm),
                "resumed_from": state.resumed_from}  # fmt: skip


def _counts(batch: dict) -> torch.Tensor:
    """(samples, real tokens, token slots) of a batch; the rest of a row is padding."""
    real = batch["attention_mask"].bool()
    samples = sum(len(ids[mask].unique()) for ids, mask in zip(batch["sample_ids"], real))
    return torch.tensor([samples, int(real.sum()), batch["sample_ids"].numel()],
                        dtype=torch.float64)  # fmt: skip
