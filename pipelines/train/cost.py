"""What a campaign will cost before it starts: per stage samples, tokens, FLOPs and GPU-hours.

FLOPs = 6 x active parameters per token x tokens (forward + backward), counted per modality: a
visual token runs the patch embedding and the visual experts, a text token the text path; the
input embedding table is a lookup and costs no FLOPs, and only text tokens need the output
projection (visual tokens carry no labels). Visual tokens per sample = the stage's max
patches x `visual_fill` (the paper's budgets are maxima); text tokens per sample = the prompt
and answer lengths. GPU-hours = FLOPs / (GPU peak x MFU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import Field

from model.options import ExpertOptions, FrozenOptions, VisionOptions
from pipelines.markdown import human, table

INTERNLM2_1_8B = {"model_type": "internlm2", "vocab_size": 92544, "hidden_size": 2048,
                  "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 16,
                  "num_key_value_heads": 8, "max_position_embeddings": 32768,
                  "rope_theta": 1000000, "rms_norm_eps": 1e-5}  # fmt: skip
"""InternLM2-1.8B's config.json fields that shape Mono-InternVL-2B."""

TEXT_TOKENS = {"alt_text": 40, "teacher_caption": 60, "tasks": 70, "conversations": 300}
"""Text tokens per sample (prompt + answer) assumed by the kind of text a stage trains on."""


class CostOptions(FrozenOptions):
    """Hardware and utilisation the GPU-hours are estimated at."""

    gpu_peak_tflops: float = Field(989.0, gt=0)
    """Peak dense bf16 TFLOP/s of one GPU (H100 SXM: 989; A100: 312)."""
    mfu: float = Field(0.4, gt=0, le=1)
    """Model FLOP utilisation reached (measured, or assumed)."""
    visual_fill: float = Field(1.0, gt=0, le=1)
    """Share of a stage's max patches an average image uses."""


@dataclass(frozen=True)
class StageCost:
    stage: str
    samples: int
    visual_tokens: float
    text_tokens: float
    flops: float
    gpu_hours: float


@dataclass(frozen=True)
class ActiveParameters:
    visual: int
    """Parameters a visual token runs through (patch embedding included)."""
    text: int
    """Parameters a text token runs through (lm_head included, embedding lookup not)."""


def active_parameters(llm_config: dict, experts: ExpertOptions = ExpertOptions(),
                      vision: VisionOptions = VisionOptions()) -> ActiveParameters:  # fmt: skip
    """Active parameters per token of Mono-InternVL around the LLM `llm_config` (a config.json
    dict), counted on a model built on the meta device (no memory, no weights)."""
    import torch

    from model.from_llm import config_for
    from model.modeling import MonoInternVLForCausalLM
    from model.param_groups import count_parameters

    config = config_for(llm_config, experts, vision)
    with torch.device("meta"):
        counts = count_parameters(MonoInternVLForCausalLM(config))
    table, head = counts.by_group["embeddings"], counts.by_group["lm_head"]
    matmul = head or table  # tied: the output projection is the embedding matrix
    # No token pays for the lookup; only text tokens need logits (visual labels are ignored).
    return ActiveParameters(visual=counts.active_per_visual_token - table - head,
                            text=counts.active_per_text_token - table - head + matmul)


def stage_cost(name: str, samples: int, visual_tokens: float, text_tokens: float,
               active: ActiveParameters, options: CostOptions) -> StageCost:  # fmt: skip
    """One stage's cost; tokens are per sample."""
    flops = 6 * samples * (active.visual * visual_tokens + active.text * text_tokens)
    hours = flops / (options.gpu_peak_tflops * 1e12 * options.mfu) / 3600
    return StageCost(name, samples, samples * visual_tokens, samples * text_tokens, flops, hours)


def _hours(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.3g}"


def cost_table(costs: list[StageCost], active: ActiveParameters, options: CostOptions) -> str:
    """Markdown table of the stages and their total."""
    keys = ("samples", "visual_tokens", "text_tokens", "flops", "gpu_hours")
    total = {k: sum(asdict(c)[k] for c in costs) for k in keys}
    rows = [[c.stage, human(c.samples), human(c.visual_tokens), human(c.text_tokens),
             f"{c.flops:.3e}", _hours(c.gpu_hours)] for c in costs]  # fmt: skip
    rows.append(["**total**", human(total["samples"]), human(total["visual_tokens"]),
                 human(total["text_tokens"]), f"{total['flops']:.3e}",
                 _hours(total["gpu_hours"])])  # fmt: skip
    header = ["stage", "samples", "visual tokens", "text tokens", "FLOPs", "GPU-hours"]
    return (f"active parameters per token: visual {human(active.visual)}, text "
            f"{human(active.text)}; GPU peak {options.gpu_peak_tflops:g} TFLOP/s at MFU "
            f"{options.mfu:g}\n\n" + table(header, rows, "lrrrrr"))  # fmt: skip


PAPER_STAGES = [("S1.1", 922_000_000, 1280, "alt_text"), ("S1.2", 258_000_000, 1792,
                 "teacher_caption"), ("S1.3", 143_000_000, 3328, "tasks")]  # fmt: skip
"""The paper's EViP (Table 1): samples and max patches of each sub-stage."""


def paper_costs(options: CostOptions) -> tuple[list[StageCost], ActiveParameters]:
    """The paper's setting: Mono-InternVL-2B on InternLM2-1.8B, S1.1-S1.3."""
    return run_costs(INTERNLM2_1_8B, ExpertOptions(), VisionOptions(), PAPER_STAGES, options)


def run_costs(llm_config: dict, experts: ExpertOptions, vision: VisionOptions,
              stages: list[tuple[str, int | None, int, str]],
              options: CostOptions) -> tuple[list[StageCost], ActiveParameters]:  # fmt: skip
    """Costs of a run's stages: (name, samples or None when not known yet, max patches, text
    kind); stages of unknown size are left out of the table."""
    active = active_parameters(llm_config, experts, vision)
    costs = [stage_cost(name, samples, patches * options.visual_fill, TEXT_TOKENS[kind], active,
                        options)
             for name, samples, patches, kind in stages if samples is not None]  # fmt: skip
    return costs, active
