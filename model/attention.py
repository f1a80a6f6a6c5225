"""Grouped-query self-attention with RoPE and optional visual q/k/v/o experts; how tokens may
attend (packed spans, masks) is `model.packed_attention`'s plan.

Legend: B batch, S new tokens, P cached tokens, K = P + S keys, H query heads, Hkv key/value
heads, d head width, D model width.

Attention itself spans all tokens of a sample whatever their modality; only the projections are
routed (Mono-InternVL-1.5's visual attention experts), through the same `ModalityRoute` as the FFN.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from model.configuration import MonoInternVLConfig
from model.mmoe import ModalityRoute
from model.packed_attention import AttentionPlan


class MonoInternVLRMSNorm(nn.Module):
    """RMSNorm computed in float32, as Llama / InternLM2 do, so float32 parity is exact."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


ROPE_TYPES = ("default", "linear", "dynamic", "llama3")
"""RoPE scalings of the LLMs people start from: InternLM2's dynamic NTK, Llama-3's, linear."""


def rope_scaling_errors(scaling: dict | None) -> list[str]:
    """What is wrong with a `rope_scaling` dict (transformers' `rope_parameters` form)."""
    if not scaling:
        return []
    rope_type = scaling.get("rope_type", "default")
    if rope_type not in ROPE_TYPES:
        return [f"rope type {rope_type!r} is not supported; supported: {ROPE_TYPES}"]
    needed = {"linear": ["factor"], "dynamic": ["factor"],
              "llama3": ["factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings"]}.get(rope_type, [])  # fmt: skip
    return [f"rope type {rope_type!r} needs {key!r}" for key in needed if key not in scaling]


class RotaryEmbedding(nn.Module):
    """RoPE cos/sin tables for given positions, rotate-half convention (HF layout), with the
    scalings of `ROPE_TYPES` computed by transformers' own `ROPE_INIT_FUNCTIONS` (same numbers as
    the source LLM by construction).

    The frequencies are recomputed per call rather than kept in a buffer: they are a few dozen
    numbers, and a buffer would need re-initialising after meta-device loading or ZeRO-3 sharding.
    Dynamic NTK scales by the longest position of the call (transformers' and InternLM2's rule).
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict | None = None,
                 max_positions: int = 8192):  # fmt: skip
        super().__init__()
        errors = rope_scaling_errors(scaling)
        if errors:
            raise ValueError("; ".join(errors))
        self.head_dim, self.theta, self.max_positions = head_dim, theta, max_positions
        self.scaling = dict(scaling or {})
        self.rope_type = self.scaling.get("rope_type", "default")

    def inv_freq(self, seq_len: int, device) -> torch.Tensor:
        if self.rope_type == "default":
            exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device)
            return 1.0 / (self.theta ** (exponents.float() / self.head_dim))
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        # The fields transformers' RoPE functions read; the parameters are already standard.
        source = SimpleNamespace(
            rope_parameters={**self.scaling, "rope_theta": self.theta}, head_dim=self.head_dim,
            hidden_size=self.head_dim, num_attention_heads=1,
            max_position_embeddings=self.max_positions,
            standardize_rope_params=lambda: None)  # fmt: skip
        inv_freq, _ = ROPE_INIT_FUNCTIONS[self.rope_type](source, device, seq_len=seq_len)
        return inv_freq.float()

    @torch.no_grad()
    def forward(self, position_ids_BS: torch.Tensor, dtype: torch.dtype):
        seq_len = int(position_ids_BS.max()) + 1 if self.rope_type == "dynamic" else None
        inv_freq = self.inv_freq(seq_len, position_ids_BS.device)
        freqs = position_ids_BS[..., None].float() * inv_freq
        emb_BSd = torch.cat((freqs, freqs), dim=-1)
        return emb_BSd.cos().to(dtype), emb_BSd.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(
    x_BHSd: torch.Tensor, cos_BSd: torch.Tensor, sin_BSd: torch.Tensor
) -> torch.Tensor:
    cos, sin = cos_BSd.unsqueeze(1), sin_BSd.unsqueeze(1)
    return x_BHSd * cos + _rotate_half(x_BHSd) * sin


class MultimodalAttention(nn.Module):
    """Self-attention whose projections are text weights, or visual experts for visual tokens."""

    def __init__(self, config: MonoInternVLConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        d, bias, out_bias = config.hidden_size, config.attention_bias, config.attention_out_bias
        self.q_proj = nn.Linear(d, q_out, bias=bias)
        self.k_proj = nn.Linear(d, kv_out, bias=bias)
        self.v_proj = nn.Linear(d, kv_out, bias=bias)
        self.o_proj = nn.Linear(q_out, d, bias=out_bias)
        self.has_visual_experts = config.visual_attention_experts
        if self.has_visual_experts:
            self.visual_q_proj = nn.Linear(d, q_out, bias=bias)
            self.visual_k_proj = nn.Linear(d, kv_out, bias=bias)
            self.visual_v_proj = nn.Linear(d, kv_out, bias=bias)
            self.visual_o_proj = nn.Linear(q_out, d, bias=out_bias)

    def _text_qkv(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)

    def _visual_qkv(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.visual_q_proj(x), self.visual_k_proj(x), self.visual_v_proj(x)], dim=-1
        )

    def _project_qkv(self, x_BSD: torch.Tensor, route: ModalityRoute):
        if not self.has_visual_experts or (route.all_text and not route.keep_visual_in_graph):
            return self.q_proj(x_BSD), self.k_proj(x_BSD), self.v_proj(x_BSD)
        qkv = route.apply(x_BSD, self._text_qkv, self._visual_qkv)
        q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return qkv.split([q_out, kv_out, kv_out], dim=-1)

    def forward(self, x_BSD, route, cos_BSd, sin_BSd, plan: AttentionPlan, cache=None):
        b, s, _ = x_BSD.shape
        q, k, v = self._project_qkv(x_BSD, route)
        q_BHSd = apply_rotary(q.view(b, s, -1, self.head_dim).transpose(1, 2), cos_BSd, sin_BSd)
        k_BHSd = apply_rotary(k.view(b, s, -1, self.head_dim).transpose(1, 2), cos_BSd, sin_BSd)
        v_BHSd = v.view(b, s, -1, self.head_dim).transpose(1, 2)
        if cache is not None:
            k_BHSd, v_BHSd = cache.update(k_BHSd, v_BHSd, self.layer_idx)
        out_BSE = plan.attend(q_BHSd, k_BHSd, v_BHSd).transpose(1, 2).reshape(b, s, -1)
        visual_o = self.visual_o_proj if self.has_visual_experts else None
        return route.apply(out_BSE, self.o_proj, visual_o)
