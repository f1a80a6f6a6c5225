"""Will each training stage fit its GPUs? Checked offline, before any GPU is rented.

Per stage: trainable / total parameters (counted on the meta device), steps and the samples and
tokens they cover, model-state memory per GPU under the stage's ZeRO stage (DeepSpeed's own
estimators for the trainable parameters, plus the frozen weights in 16 bit; 4-byte everything
for a stage that trains in float32), activation memory at the stage's pack size with and without
activation checkpointing, and whether the sum fits.

Activations per layer and token are `ACTIVATION_VALUES` x hidden values, as measured by
`benchmarks.real_shape` at the InternLM2-1.8B layer shape (4 layers, 2,048 tokens: 1,790 MB
without checkpointing, 620 MB with it); per-sample attention keeps no S x S scores. The loss
adds one chunk of supervised logits and their gradient (`model.supervised_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.train.cost import TEXT_TOKENS

ACTIVATION_VALUES = 27.0
"""Values kept (and transiently alive in backward) per layer, token and hidden unit."""
CHECKPOINTED_VALUES = 2.5
"""Per checkpointed layer: its input and what recompute keeps alive."""
HEADROOM = 0.9
"""Share of a GPU's memory a stage may plan to use (fragmentation, CUDA context, buffers)."""
GIB = 2**30


@dataclass(frozen=True)
class ModelSize:
    total: int
    trainable: int
    largest_layer: int
    """Parameters of the largest single module (ZeRO-3 gathers one at a time)."""
    hidden: int
    layers: int
    vocab: int


@dataclass(frozen=True)
class StageFit:
    stage: str
    size: ModelSize
    steps: int
    samples: int
    tokens: int
    states_gib: float
    activations_gib: float
    activations_checkpointed_gib: float
    needed_gib: float
    gpu_gib: float

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.gpu_gib * HEADROOM


def model_size(config, trainable_groups: list[str]) -> ModelSize:
    """Counts a `MonoInternVLConfig` built on the meta device with the stage's groups trainable."""
    import torch

    from model.modeling import MonoInternVLForCausalLM
    from model.param_groups import set_trainable

    with torch.device("meta"):
        model = MonoInternVLForCausalLM(config)
    set_trainable(model, trainable_groups)
    params = list(model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ModelSize(total=sum(p.numel() for p in params),
                     trainable=sum(p.numel() for p in params if p.requires_grad),
                     largest_layer=largest, hidden=config.hidden_size,
                     layers=config.num_hidden_layers, vocab=config.vocab_size)  # fmt: skip


def model_state_bytes(size: ModelSize, zero_stage: int, gpus: int, bf16: bool = True) -> int:
    """Weights, gradients and Adam states per GPU: bf16 training with fp32 master weights, or
    float32 training (4 B weights, 4 B gradients, 8 B Adam moments; no master copy)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    trainable, frozen = size.trainable, size.total - size.trainable
    if not bf16:  # weights, gradients, Adam moments; ZeRO stage n shards the last n of them
        parts = [4 * trainable, 4 * trainable, 8 * trainable]
        kept = 3 - zero_stage
        frozen_bytes = 4 * frozen // (gpus if zero_stage == 3 else 1)
        return sum(parts[:kept]) + sum(parts[kept:]) // gpus + frozen_bytes
    if zero_stage == 3:
        _, states, _ = estimate_zero3_model_states_mem_needs(
            trainable, size.largest_layer, num_gpus_per_node=gpus, cpu_offload=False,
            cpu_offload_params=False)  # fmt: skip
        return states + 2 * frozen // gpus
    if zero_stage == 2:
        _, states = estimate_zero2_model_states_mem_needs(trainable, num_gpus_per_node=gpus,
                                                          cpu_offload=False)  # fmt: skip
    elif zero_stage == 1:  # no DeepSpeed estimator: 16-bit weights, gradients whole; 16 B sharded
        states = 4 * trainable + 16 * trainable // gpus
    else:
        states = 20 * trainable
    return states + 2 * frozen


def activation_bytes(size: ModelSize, tokens: int, checkpointing: str, every: int = 2,
                     supervised: int = 0, chunk: int = 4096,
                     bytes_per_value: int = 2) -> int:  # fmt: skip
    """Activation memory of one micro-batch of `tokens` tokens."""
    full = ACTIVATION_VALUES * tokens * size.hidden
    if checkpointing == "none":
        layers = size.layers * full
    else:
        kept = size.layers if checkpointing == "full" else math.ceil(size.layers / every)
        saved = CHECKPOINTED_VALUES * tokens * size.hidden
        layers = kept * saved + (size.layers - kept) * full + full  # + the layer recomputed
    loss = min(chunk, supervised) * size.vocab * 2 * 4  # fp32 logits and their gradient
    return int(layers * bytes_per_value + loss)


def stage_fit(name: str, size: ModelSize, stage, max_patches: int, text_kind: str, gpus: int,
              gpu_gib: float, visual_fill: float = 1.0, bf16: bool = True) -> StageFit:  # fmt: skip
    """How one stage (`pipelines.train.schedule.TrainStage`) fits `gpus` GPUs of `gpu_gib`,
    training in bf16 or in float32."""
    sample_tokens = max_patches * visual_fill + TEXT_TOKENS[text_kind]
    per_pack = max(1, int(stage.max_packed_tokens // sample_tokens))
    tokens = stage.micro_batch * stage.max_packed_tokens
    supervised = int(tokens * TEXT_TOKENS[text_kind] / sample_tokens)
    states = model_state_bytes(size, stage.zero_stage, gpus, bf16)

    def activations(mode: str) -> int:
        return activation_bytes(size, tokens, mode, stage.checkpoint_every_n_layers, supervised,
                                bytes_per_value=2 if bf16 else 4)  # fmt: skip

    chosen = activations(stage.activation_checkpointing)
    return StageFit(stage=name, size=size, steps=stage.steps,
                    samples=stage.steps * stage.global_batch * per_pack,
                    tokens=stage.steps * stage.global_batch * stage.max_packed_tokens,
                    states_gib=states / GIB, activations_gib=activations("none") / GIB,
                    activations_checkpointed_gib=activations("full") / GIB,
                    needed_gib=(states + chosen) / GIB, gpu_gib=gpu_gib)  # fmt: skip


def fix_for(fit: StageFit, index: int, stage) -> str:
    """What to change in the config when a stage does not fit (the field's path first)."""
    path = f"train.stages.{index}"
    hints = []
    if stage.activation_checkpointing != "full":
        hints.append(f"{path}.activation_checkpointing=full")
    if stage.zero_stage < 3:
        hints.append(f"{path}.zero_stage=3")
    hints.append(f"{path}.max_packed_tokens (now {stage.max_packed_tokens}) lower")
    hints.append("train.workers higher (more GPUs to shard over)")
    return (f"{path} ({fit.stage}) needs {fit.needed_gib:.1f} GiB per GPU, more than "
            f"{HEADROOM:.0%} of {fit.gpu_gib:g} GiB: set " + ", or ".join(hints))
