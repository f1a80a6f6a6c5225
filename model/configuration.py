"""`MonoInternVLConfig`: the LLM's shape, the visual tokenizer, the experts and the special tokens.

A transformers strict dataclass config, so `save_pretrained` / `from_pretrained` work and every
field is type-checked at construction; `validate_architecture` names the field that is wrong.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from model.options import ExpertOptions, VisionOptions, vision_geometry_errors


@strict
class MonoInternVLConfig(PreTrainedConfig):
    """Config of a decoder-only LLM with visual experts embedded (Mono-InternVL, paper 3.1)."""

    model_type = "mono_internvl_evip"

    # The LLM (Llama / Qwen2 / InternLM2 family).
    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    """None (default RoPE) or {"rope_type": linear|dynamic|llama3, "factor": ..., ...}."""
    max_position_embeddings: int = 8192
    attention_bias: bool = False
    attention_out_bias: bool = False
    mlp_bias: bool = False
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    # The visual tokenizer (patch embedding + position embedding + pixel shuffle + MLP).
    patch_size: int = 14
    downsample_ratio: float = 0.5
    tile_size: int = 448
    vision_hidden_size: int | None = None
    num_channels: int = 3
    min_tiles: int = 1
    max_tiles: int = 12
    use_thumbnail: bool = True
    projector_layer_norm_eps: float = 1e-5

    # The visual experts.
    visual_ffn_experts: bool = True
    visual_attention_experts: bool = False

    # Whether the tokenizer saved beside the weights is remote code (`load_tokenizer`); not named
    # trust_remote_code, which transformers' configs take as a loading argument and drop.
    tokenizer_remote_code: bool = False

    # How packed samples attend (`model.packed_attention.BACKENDS`); `auto` picks by device.
    packed_attention: str = "auto"

    # Special tokens; ids are resolved against the tokenizer when the model is built.
    image_token_id: int | None = None
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        ints = isinstance(self.hidden_size, int) and isinstance(self.num_attention_heads, int)
        if self.head_dim is None and ints and self.num_attention_heads > 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.vision_hidden_size is None:
            self.vision_hidden_size = self.hidden_size
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Rejects shapes that cannot be built, naming the offending field."""
        positive = (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vision_hidden_size",
        )  # fmt: skip
        for name in positive:
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be an int, got {getattr(self, name)!r}")
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        from model.attention import rope_scaling_errors
        from model.packed_attention import BACKENDS

        if rope_scaling_errors(self.rope_scaling):
            raise ValueError("rope_scaling: " + "; ".join(rope_scaling_errors(self.rope_scaling)))

        if self.packed_attention not in BACKENDS:
            raise ValueError(
                f"packed_attention must be one of {BACKENDS}, got {self.packed_attention!r}"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act must be 'silu' (SwiGLU), got {self.hidden_act!r}")
        errors = vision_geometry_errors(
            self.patch_size, self.downsample_ratio, self.tile_size, self.min_tiles, self.max_tiles
        )
        if errors:
            raise ValueError("vision: " + "; ".join(errors))
        for name in ("image_token_id", "image_start_token_id", "image_end_token_id"):
            token_id = getattr(self, name)
            if token_id is not None and not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"{name} ({token_id}) is outside the vocabulary (0..{self.vocab_size})"
                )

    @property
    def tokens_per_tile(self) -> int:
        """Visual tokens per tile: (tile / patch)^2 * downsample^2 (256 for 448 px tiles)."""
        side = self.tile_size // self.patch_size
        return round(side * side * self.downsample_ratio * self.downsample_ratio)

    @property
    def vision_options(self) -> VisionOptions:
        """The vision fields as the run-config options model."""
        return VisionOptions(
            patch_size=self.patch_size,
            downsample_ratio=self.downsample_ratio,
            tile_size=self.tile_size,
            vision_hidden_size=self.vision_hidden_size,
            min_tiles=self.min_tiles,
            max_tiles=self.max_tiles,
            use_thumbnail=self.use_thumbnail,
        )

    @property
    def expert_options(self) -> ExpertOptions:
        return ExpertOptions(
            visual_ffn_experts=self.visual_ffn_experts,
            visual_attention_experts=self.visual_attention_experts,
        )
