"""The curriculum as a validated schedule (OLMo-core style): the training loop reads these fields
and never branches on a stage's name.

Each stage names its data stage (`stages.stages`), what trains (parameter groups), how long, the
global batch (packs per optimiser step, fixed whatever the worker count: accumulation adapts),
the optimiser and its cosine schedule with warmup, the ZeRO stage and precision. Paper §3.2:
S1.1/S1.2 train the patch embedding and visual experts; S1.3 adds attention (or the visual
attention experts in the 1.5 variant); S2 trains everything.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from model.options import GROUPS, FrozenOptions, check_group_names


def milestone_name(step: int) -> str:
    """The folder of the weights exported at a data milestone (beside `final`)."""
    return f"milestone-{step:06d}"


class OptimizerOptions(FrozenOptions):
    """AdamW with a cosine schedule after a linear warmup."""

    lr: float = Field(2e-4, gt=0)
    """Peak learning rate."""
    weight_decay: float = Field(0.05, ge=0)
    """Decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam betas."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """Share of the stage's steps spent warming up linearly from 0."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    """The cosine ends at lr * min_lr_ratio."""
    grad_clip: float = Field(1.0, gt=0)
    """Gradient-norm clipping."""


class TrainStage(FrozenOptions):
    """How one curriculum stage trains."""

    name: str
    """The data stage it trains on (a name in `stages.stages`)."""
    trainable: list[str]
    """Parameter groups that train; every other parameter is frozen (no gradient, no state)."""
    steps: int = Field(100, gt=0)
    """Optimiser steps."""
    global_batch: int = Field(8, gt=0)
    """Packs per optimiser step, across all workers."""
    micro_batch: int = Field(1, gt=0)
    """Packs per worker per forward/backward."""
    max_packed_tokens: int = Field(4096, gt=0)
    """Tokens per pack."""
    zero_stage: Literal[0, 1, 2, 3] = 1
    """DeepSpeed ZeRO stage."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 on GPUs (fp32 when the start weights are float32: bf16 would round their frozen
    text path), fp32 on CPUs."""
    activation_checkpointing: Literal["none", "full", "every_n"] = "none"
    """Decoder layers recomputed in backward instead of keeping activations: none, every layer
    (`full`) or every `checkpoint_every_n_layers`-th (`every_n`); same gradients, less memory."""
    checkpoint_every_n_layers: int = Field(2, gt=0)
    """The period of `activation_checkpointing: every_n`."""
    packed_attention: Literal["auto", "per_sample", "flex", "flash_varlen", "masked"] = "auto"
    """How packed samples attend (`model.packed_attention`); auto: flash-attn varlen or flex on
    GPUs, per-sample SDPA on CPUs."""
    optimizer: OptimizerOptions = OptimizerOptions()
    """Optimiser and learning-rate schedule."""
    loss_reduction: Literal["token", "sqrt"] = "token"
    """Per-token mean, or InternVL's square-root averaging per sample."""
    checkpoint_every: int = Field(50, gt=0)
    """Steps between checkpoints."""
    keep_checkpoints: int = Field(2, gt=0)
    """Checkpoints kept (the newest)."""
    report_every: int = Field(10, gt=0)
    """Steps between metric reports to Ray Train (each is a barrier across the workers, over a
    second on a small machine); every step still goes to TensorBoard and metrics.jsonl."""
    deepspeed: dict = {}
    """A user's DeepSpeed JSON, merged over the generated config."""
    milestones: int = Field(4, gt=0)
    """Weights are exported after each 1/milestones of the steps (the last is `final/`), so the
    evaluation can draw quality against data seen (the paper's Fig. 4)."""

    @field_validator("trainable")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        if not groups:
            raise ValueError(f"a stage must train something; groups: {list(GROUPS)}")
        return check_group_names(groups)

    def accumulation(self, workers: int) -> int:
        """Micro steps per optimiser step with `workers` workers (the global batch stays fixed).

        Raises:
            ValueError: the global batch is not a multiple of micro_batch * workers.
        """
        per_step = self.micro_batch * workers
        if self.global_batch % per_step:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of "
                             f"micro_batch x workers ({self.micro_batch} x {workers})")  # fmt: skip
        return self.global_batch // per_step

    def milestone_steps(self) -> list[int]:
        """Optimiser steps after which the weights are exported (the last: the stage's end)."""
        return sorted({math.ceil(k * self.steps / self.milestones)
                       for k in range(1, self.milestones + 1)})  # fmt: skip

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based)."""
        opt, warmup = self.optimizer, math.ceil(self.optimizer.warmup_ratio * self.steps)
        if step < warmup:
            return opt.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return opt.lr * (opt.min_lr_ratio + (1 - opt.min_lr_ratio) * cosine)


VISUAL = ["patch_embed", "visual_ffn"]
DEFAULT_TRAIN_STAGES = [
    TrainStage(name="S1.1", trainable=VISUAL),
    TrainStage(name="S1.2", trainable=VISUAL),
    TrainStage(name="S1.3", trainable=[*VISUAL, "attention"]),
]
"""EViP's three sub-stages; add S2 (`trainable` = every group) with instruction data."""


class TrainOptions(FrozenOptions):
    """Training through the curriculum on Ray Train workers running DeepSpeed."""

    stages: list[TrainStage] = DEFAULT_TRAIN_STAGES
    """Stages in order; each starts from the previous one's final weights."""
    workers: int = Field(2, gt=0)
    """Ray Train workers."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs per worker."""
    use_gpu: bool | Literal["auto"] = "auto"
    """One GPU per worker (NCCL) instead of CPUs (gloo); auto: GPUs when the Ray cluster has any
    (resolved when the stage starts)."""
    gpu_memory_gib: float = Field(80.0, gt=0)
    """Memory of one worker's GPU; `evip check` plans each stage against it."""
    seed: int = 0
    """Seed of initialisation-free randomness (data order, dropout)."""

    @model_validator(mode="after")
    def _check(self) -> TrainOptions:
        names = [s.name for s in self.stages]
        if len(names) != len(set(names)):
            raise ValueError(f"train stages repeat: {names}")
        if "init" in names:
            raise ValueError("a train stage cannot be named 'init' (the untrained checkpoint)")
        for index, stage in enumerate(self.stages):
            try:
                stage.accumulation(self.workers)
            except ValueError as error:
                raise ValueError(f"stages[{index}] ({stage.name}): {error}") from error
        gpu_only = [s.name for s in self.stages if s.packed_attention in ("flex", "flash_varlen")]
        if self.use_gpu is False and gpu_only:
            raise ValueError(f"stages {gpu_only}: packed_attention flex and flash_varlen train on "
                             "GPUs only, and use_gpu is false (per_sample or auto run on CPUs)")
        return self
