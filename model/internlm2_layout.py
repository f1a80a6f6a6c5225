"""InternLM2's parameter layout (packed grouped `wqkv`), to and from evip's Llama-style names.

InternLM2 packs q, k and v per key/value group: for each of the Hkv groups, its H/Hkv query heads,
then its key head, then its value head, each head_dim rows. Mono-InternVL's released checkpoint is
InternLM2 with `feed_forward_ve` visual experts added, under `language_model.`.
"""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# evip name inside a layer <-> InternLM2 name inside a layer (weights and biases alike).
_LAYER_RENAMES = {
    "self_attn.o_proj": "attention.wo",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "visual_mlp.gate_proj": "feed_forward_ve.w1",
    "visual_mlp.down_proj": "feed_forward_ve.w2",
    "visual_mlp.up_proj": "feed_forward_ve.w3",
}
_TOP_RENAMES = {
    "model.embed_tokens": "model.tok_embeddings",
    "model.norm": "model.norm",
    "lm_head": "output",
}


def pack_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_kv_heads: int, head_dim: int):
    """(H*d, ...), (Hkv*d, ...), (Hkv*d, ...) -> InternLM2's grouped ((H + 2*Hkv)*d, ...)."""
    rest = q.shape[1:]
    q_g = q.reshape(num_kv_heads, -1, head_dim, *rest)
    k_g = k.reshape(num_kv_heads, 1, head_dim, *rest)
    v_g = v.reshape(num_kv_heads, 1, head_dim, *rest)
    return torch.cat([q_g, k_g, v_g], dim=1).reshape(-1, *rest)


def unpack_wqkv(wqkv: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int):
    """Inverse of `pack_wqkv`: returns q, k, v with heads in order."""
    rest = wqkv.shape[1:]
    group = num_heads // num_kv_heads
    g = wqkv.reshape(num_kv_heads, group + 2, head_dim, *rest)
    q = g[:, :group].reshape(num_heads * head_dim, *rest)
    k = g[:, group].reshape(num_kv_heads * head_dim, *rest)
    v = g[:, group + 1].reshape(num_kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def _split_suffix(name: str) -> tuple[str, str]:
    stem, _, suffix = name.rpartition(".")
    return stem, suffix


def to_internlm2(state: dict[str, torch.Tensor], num_kv_heads: int, head_dim: int) -> dict:
    """evip LLM weights (`model.*`, `lm_head.*`) -> InternLM2 names; other keys are left out.

    Raises:
        ValueError: a weight InternLM2's layout has no place for (visual attention experts).
    """
    out, qkv = {}, {}
    for name, tensor in state.items():
        stem, suffix = _split_suffix(name)
        if stem in _TOP_RENAMES:
            out[f"{_TOP_RENAMES[stem]}.{suffix}"] = tensor
            continue
        match = _LAYER.match(stem)
        if not match:
            continue
        layer, inner = match.groups()
        if inner in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((layer, suffix), {})[inner[-6]] = tensor
        elif inner in _LAYER_RENAMES:
            out[f"model.layers.{layer}.{_LAYER_RENAMES[inner]}.{suffix}"] = tensor
        else:
            raise ValueError(f"{name} has no place in the InternLM2 / Mono-InternVL-2B layout")
    for (layer, suffix), parts in qkv.items():
        packed = pack_wqkv(parts["q"], parts["k"], parts["v"], num_kv_heads, head_dim)
        out[f"model.layers.{layer}.attention.wqkv.{suffix}"] = packed
    return out


def from_internlm2(
    state: dict[str, torch.Tensor], num_heads: int, num_kv_heads: int, head_dim: int
):
    """InternLM2 names -> evip names (inverse of `to_internlm2`); unknown keys are left out."""
    top = {v: k for k, v in _TOP_RENAMES.items()}
    layer_names = {v: k for k, v in _LAYER_RENAMES.items()}
    out = {}
    for name, tensor in state.items():
        stem, suffix = _split_suffix(name)
        if stem in top:
            out[f"{top[stem]}.{suffix}"] = tensor
            continue
        match = _LAYER.match(stem)
        if not match:
            continue
        layer, inner = match.groups()
        if inner == "attention.wqkv":
            q, k, v = unpack_wqkv(tensor, num_heads, num_kv_heads, head_dim)
            for letter, part in zip("qkv", (q, k, v)):
                out[f"model.layers.{layer}.self_attn.{letter}_proj.{suffix}"] = part
        elif inner in layer_names:
            out[f"model.layers.{layer}.{layer_names[inner]}.{suffix}"] = tensor
    return out
