"""The DeepSpeed config of a stage, generated from the schedule; a user's JSON is merged over it.

The optimiser and scheduler stay ours (the loop builds AdamW over trainable parameters only and
sets the learning rate per step), so DeepSpeed only gets batch sizes, ZeRO, precision and clipping.
"""

from __future__ import annotations

import copy

import torch

from pipelines.train.schedule import TrainStage


def merge(base: dict, override: dict) -> dict:
    """`override` laid over `base`, recursively for nested dicts."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def trains_in_bf16(stage: TrainStage, device: str, weights_dtype: torch.dtype) -> bool:
    """Whether `stage` trains in bf16 on `device` from `weights_dtype` weights.

    `precision: auto` is bf16 on CUDA unless the weights are float32: DeepSpeed casts every
    parameter, frozen ones too, so bf16 would round a float32 model's frozen text path (which
    must stay bit-for-bit the LLM's); such a model trains in float32 unless `precision: bf16`.
    """
    if stage.precision != "auto":
        return stage.precision == "bf16"
    return device == "cuda" and weights_dtype != torch.float32


def deepspeed_config(stage: TrainStage, workers: int, device: str,
                     weights_dtype: torch.dtype = torch.bfloat16) -> dict:  # fmt: skip
    """DeepSpeed's config for `stage` on `workers` workers of `device` ("cpu" or "cuda"), whose
    start checkpoint holds `weights_dtype` weights (precision: `trains_in_bf16`).

    Raises:
        ValueError: a combination DeepSpeed would reject later, named by its field.
    """
    bf16 = trains_in_bf16(stage, device, weights_dtype)
    config = {
        "train_batch_size": stage.global_batch,
        "train_micro_batch_size_per_gpu": stage.micro_batch,
        "gradient_accumulation_steps": stage.accumulation(workers),
        "gradient_clipping": stage.optimizer.grad_clip,
        "zero_optimization": {"stage": stage.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    config = merge(config, stage.deepspeed)
    batch = (config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
             * workers)  # fmt: skip
    if batch != config["train_batch_size"]:
        raise ValueError(f"train.stages[{stage.name}].deepspeed: train_batch_size "
                         f"{config['train_batch_size']} != micro {batch // workers} x workers "
                         f"{workers}")  # fmt: skip
    if config.get("fp16", {}).get("enabled") and config["bf16"]["enabled"]:
        raise ValueError(f"train.stages[{stage.name}].deepspeed: fp16 and bf16 both enabled")
    if "optimizer" in config or "scheduler" in config:
        raise ValueError(f"train.stages[{stage.name}].deepspeed: optimizer/scheduler come from "
                         "the stage's `optimizer` (AdamW over trainable parameters only)")
    return config
