"""The model section of a run config: which LLM to start from, which experts to embed, vision sizes.

Frozen pydantic models, so a bad value fails at load with its field path, and Prefect can render
them as UI forms. `flows/` composes this section into the run config; nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GROUPS = (
    "patch_embed",
    "visual_ffn",
    "visual_attention",
    "attention",
    "text_ffn",
    "embeddings",
    "lm_head",
    "norms",
)
"""Named parameter groups a curriculum stage trains (`model/param_groups.py` maps parameters)."""


def check_group_names(groups: Iterable[str]) -> list[str]:
    """Returns the names as a list, or raises listing the valid ones."""
    groups = list(groups)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown parameter groups {unknown}; valid: {list(GROUPS)}")
    return groups


class FrozenOptions(BaseModel):
    """Base for every options model in evip: immutable, unknown keys rejected (typos fail)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def vision_geometry_errors(
    patch_size: int, downsample_ratio: float, tile_size: int, min_tiles: int, max_tiles: int
) -> list[str]:
    """Checks that patches, pixel shuffle and tiles fit together; returns one message per problem.

    Shared by `VisionOptions` and `MonoInternVLConfig` so both reject the same geometry.
    """
    errors = []
    if patch_size <= 0 or tile_size <= 0:
        errors.append("patch_size and tile_size must be positive")
        return errors
    inverse = 1.0 / downsample_ratio if downsample_ratio > 0 else 0.0
    if not (0 < downsample_ratio <= 1) or abs(inverse - round(inverse)) > 1e-6:
        errors.append(f"downsample_ratio ({downsample_ratio}) must be 1/k for an integer k >= 1")
        return errors
    token_px = patch_size * round(inverse)
    if tile_size % token_px:
        errors.append(
            f"tile_size ({tile_size}) must be a multiple of "
            f"patch_size / downsample_ratio ({token_px})"
        )
    if not 1 <= min_tiles <= max_tiles:
        errors.append(f"need 1 <= min_tiles ({min_tiles}) <= max_tiles ({max_tiles})")
    return errors


class VisionOptions(FrozenOptions):
    """The visual tokenizer: patch embedding, pixel shuffle and dynamic high-resolution tiles."""

    patch_size: int = Field(14, gt=0)
    """Pixels per side of one patch of the patch embedding."""
    downsample_ratio: float = Field(0.5, gt=0, le=1)
    """Pixel-shuffle ratio; 0.5 merges 2x2 patches, so one visual token covers 28x28 px."""
    tile_size: int = Field(448, gt=0)
    """Side of one square tile in pixels (448 px -> 256 visual tokens)."""
    vision_hidden_size: int | None = Field(None, gt=0)
    """Width of the patch embedding before pixel shuffle; None uses the LLM's hidden size."""
    min_tiles: int = Field(1, ge=1)
    """Fewest tiles an image is split into."""
    max_tiles: int = Field(12, ge=1)
    """Most tiles an image is split into (the thumbnail not counted)."""
    use_thumbnail: bool = True
    """Append a downscaled whole-image tile when an image has more than one tile."""

    @model_validator(mode="after")
    def _check_geometry(self) -> VisionOptions:
        errors = vision_geometry_errors(
            self.patch_size, self.downsample_ratio, self.tile_size, self.min_tiles, self.max_tiles
        )
        if errors:
            raise ValueError("; ".join(errors))
        return self


class ExpertOptions(FrozenOptions):
    """Which visual experts are embedded into every decoder layer (paper section 3.1)."""

    visual_ffn_experts: bool = True
    """Visual tokens go through their own FFN, initialised from the text FFN."""
    visual_attention_experts: bool = False
    """Visual tokens also get their own q/k/v/o projections (Mono-InternVL-1.5)."""


class TinyLLMOptions(FrozenOptions):
    """Shape of the random-weight LLM that is built locally when no `llm_path` is given (demo)."""

    family: Literal["llama", "qwen2"] = "llama"
    """Hugging Face architecture of the tiny LLM."""
    hidden_size: int = Field(64, gt=0)
    """Model width."""
    intermediate_size: int = Field(128, gt=0)
    """FFN width."""
    num_hidden_layers: int = Field(2, gt=0)
    """Decoder layers."""
    num_attention_heads: int = Field(4, gt=0)
    """Query heads."""
    num_key_value_heads: int = Field(2, gt=0)
    """Key/value heads (grouped-query attention)."""
    seed: int = 0
    """Seed of the random weights."""
    vocab_size: int = Field(512, ge=64)
    """Byte-level BPE vocabulary, trained locally."""
    pretrain_steps: int = Field(0, ge=0)
    """Causal-LM steps on the synthetic web's language before EViP (0: random weights)."""
    pretrain_lr: float = Field(3e-3, gt=0)
    """Peak learning rate of that pretraining (one-cycle schedule)."""
    pretrain_length: int = Field(512, gt=0)
    """Tokens per pretraining sequence (texts packed end to end)."""
    pretrain_texts: int = Field(3000, gt=0)
    """Scenes whose descriptions (plain and as chat answers) the pretraining reads."""

    def shape(self) -> dict:
        """The config.json fields these options set (the Hugging Face names)."""
        return self.model_dump(include={"hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "num_key_value_heads"})  # fmt: skip

    @model_validator(mode="after")
    def _check_heads(self) -> TinyLLMOptions:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
        return self


class ModelOptions(FrozenOptions):
    """The model section of a run: start LLM, experts and visual tokenizer."""

    llm_path: str | None = None
    """Local Hugging Face Llama / Qwen2 / InternLM2 checkpoint; None builds a tiny random LLM."""
    tiny_llm: TinyLLMOptions = TinyLLMOptions()
    """Shape of the tiny LLM used when `llm_path` is None."""
    experts: ExpertOptions = ExpertOptions()
    """Visual experts to embed."""
    vision: VisionOptions = VisionOptions()
    """Visual tokenizer and tiling."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the built model."""
    trust_remote_code: bool = False
    """Run the LLM's own tokenizer code (InternLM2's tokenizer is remote code). Recorded in the
    built checkpoint, so training, evaluation and export load its tokenizer the same way."""
