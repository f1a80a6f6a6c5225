"""Attention over packed samples without an S x S mask: per-sample SDPA, flex attention, or
flash-attention's varlen kernel, chosen by device and what is installed.

Legend: B batch (packed rows), S tokens per row, K keys, H query heads, Hkv key/value heads,
d head width, T = B * S tokens of all rows.

Why: a packed row holds several samples that must not see each other. A dense boolean
(B, 1, S, S) mask does that, but it costs S x S memory and pushes SDPA off its fused kernels (on
CUDA, flash attention takes no mask at all). Every sample is a contiguous span of its row, so
attention can instead run causally inside each span: the spans are all that is needed.

Backends (`packed_attention` in the model config or `set_packed_attention`):
- `auto`: `flash_varlen` on CUDA when flash-attn loads, the GPU is sm80+ and the dtype 16-bit,
  `flex` on other CUDA, `per_sample` on CPU.
- `per_sample`: one causal SDPA call per sample span; works everywhere.
- `flex`: `torch.nn.attention.flex_attention` with a document (block-causal) mask; compiled on
  CUDA, eager (slow, a test reference) elsewhere.
- `flash_varlen`: `flash_attn_varlen_func` over cumulative sequence lengths (CUDA, fp16/bf16).
- `masked`: the dense boolean mask (the reference the others are tested against).

`plan_attention` decides once per forward; `positions_and_samples` finds a pack's samples.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "per_sample", "flex", "flash_varlen", "masked")


@functools.cache
def flash_attn_installed() -> bool:
    """flash-attn importable with its CUDA kernels: a build against another torch is installed
    but fails to load ("undefined symbol"), and then does not count."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn.flash_attn_interface  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _flash_varlen_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """flash-attn 2 runs 16-bit tensors on Ampere (sm80) or newer GPUs."""
    return (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(device) >= (8, 0)
            and flash_attn_installed())  # fmt: skip


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype,
                    training: bool = False) -> str:  # fmt: skip
    """The backend `name` stands for on `device` (only `auto` depends on it).

    Raises:
        ValueError: an unknown name, flash_varlen where it cannot run, or flex training on a CPU
            (torch has no flex attention backward there).
    """
    if name not in BACKENDS:
        raise ValueError(f"packed_attention must be one of {BACKENDS}, got {name!r}")
    if name == "flash_varlen" and not _flash_varlen_runs(device, dtype):
        raise ValueError("packed_attention=flash_varlen needs the flash-attn package, a CUDA GPU "
                         f"of sm80 or newer and fp16/bf16 weights (here: {device}, {dtype})")
    if name == "flex" and training and device.type != "cuda":
        raise ValueError("packed_attention=flex trains on CUDA only (torch has no flex attention "
                         "backward on CPU): use per_sample or auto")  # fmt: skip
    if name != "auto":
        return name
    if device.type == "cuda":
        return "flash_varlen" if _flash_varlen_runs(device, dtype) else "flex"
    return "per_sample"


@dataclass
class PackedSpans:
    """Where the samples of each packed row start and end (computed once per forward)."""

    sample_ids_BS: torch.Tensor
    lengths: list[list[int]] = field(init=False)
    """Per row, the length of each sample span in order."""

    def __post_init__(self):
        # One host transfer per forward; spans are the same for every layer.
        changes_BS = torch.ones_like(self.sample_ids_BS, dtype=torch.bool)
        changes_BS[:, 1:] = self.sample_ids_BS[:, 1:] != self.sample_ids_BS[:, :-1]
        self.lengths = []
        width = self.sample_ids_BS.shape[1]
        for row in changes_BS.cpu():
            starts = row.nonzero().squeeze(1).tolist()
            self.lengths.append([b - a for a, b in zip(starts, [*starts[1:], width])])

    @functools.cached_property
    def cu_seqlens(self) -> torch.Tensor:
        """Cumulative span lengths over all rows laid end to end (int32, flash-attn's form)."""
        flat = [length for row in self.lengths for length in row]
        bounds = torch.tensor([0, *flat], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        return bounds.to(self.sample_ids_BS.device)

    @functools.cached_property
    def max_length(self) -> int:
        return max(length for row in self.lengths for length in row)

    @functools.cached_property
    def block_mask(self):
        """flex attention's document-causal block mask. Built compiled on CUDA: eager
        `create_block_mask` first materialises the dense (B, 1, S, S) mask this module avoids."""
        from torch.nn.attention.flex_attention import create_block_mask

        ids_BS = self.sample_ids_BS

        def document_causal(b, h, q_idx, kv_idx):
            return (ids_BS[b, q_idx] == ids_BS[b, kv_idx]) & (q_idx >= kv_idx)

        b, s = ids_BS.shape
        build = _compiled_block_mask() if ids_BS.is_cuda else create_block_mask
        return build(document_causal, b, None, s, s, device=ids_BS.device)


def per_sample_attention(q_BHSd, k_BHSd, v_BHSd, spans: PackedSpans, gqa: bool) -> torch.Tensor:
    """Causal SDPA inside each span: O(sum of span^2) work, no mask, fused kernels."""
    rows = []
    for b, lengths in enumerate(spans.lengths):
        outs, start = [], 0
        for length in lengths:
            end = start + length
            outs.append(F.scaled_dot_product_attention(
                q_BHSd[b : b + 1, :, start:end], k_BHSd[b : b + 1, :, start:end],
                v_BHSd[b : b + 1, :, start:end], is_causal=length > 1, enable_gqa=gqa))  # fmt: skip
            start = end
        rows.append(torch.cat(outs, dim=2) if len(outs) > 1 else outs[0])
    return torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]


@functools.cache
def _compiled_block_mask():
    """Compiled once; a new pack's mask function (a new closure, same code) reuses the graph."""
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_packed_attention(q_BHSd, k_BHSd, v_BHSd, spans: PackedSpans, gqa: bool):
    """flex_attention with the document-causal block mask (compiled on CUDA)."""
    from torch.nn.attention.flex_attention import flex_attention

    fn = _compiled_flex() if q_BHSd.is_cuda else flex_attention
    return fn(q_BHSd, k_BHSd, v_BHSd, block_mask=spans.block_mask, enable_gqa=gqa)


def flash_varlen_attention(q_BHSd, k_BHSd, v_BHSd, spans: PackedSpans, gqa: bool):
    """flash-attn's varlen kernel over all rows' spans laid end to end (GQA is native)."""
    from flash_attn import flash_attn_varlen_func

    b, h, s, d = q_BHSd.shape

    def tokens(x_BHSd):  # (B, H, S, d) -> (T, H, d)
        return x_BHSd.transpose(1, 2).reshape(b * s, x_BHSd.shape[1], d)

    out_THd = flash_attn_varlen_func(
        tokens(q_BHSd), tokens(k_BHSd), tokens(v_BHSd), spans.cu_seqlens, spans.cu_seqlens,
        spans.max_length, spans.max_length, causal=True)  # fmt: skip
    return out_THd.view(b, s, h, d).transpose(1, 2)


KERNELS = {
    "per_sample": per_sample_attention,
    "flex": flex_packed_attention,
    "flash_varlen": flash_varlen_attention,
}


@dataclass
class AttentionPlan:
    """How the tokens of one forward may attend, decided once and shared by every layer."""

    mask_B1SK: torch.Tensor | None = None
    """A dense boolean mask (padding, KV cache with padding, or the `masked` backend)."""
    spans: PackedSpans | None = None
    """Packed sample spans, for the mask-free kernels."""
    backend: str = "per_sample"

    def attend(self, q_BHSd, k_BHSd, v_BHSd) -> torch.Tensor:
        gqa = q_BHSd.shape[1] != k_BHSd.shape[1]
        if self.spans is not None:
            return KERNELS[self.backend](q_BHSd, k_BHSd, v_BHSd, self.spans, gqa)
        s, keys = q_BHSd.shape[2], k_BHSd.shape[2]
        causal = self.mask_B1SK is None and s > 1 and keys == s
        return F.scaled_dot_product_attention(
            q_BHSd, k_BHSd, v_BHSd, attn_mask=self.mask_B1SK, is_causal=causal, enable_gqa=gqa
        )


def build_attention_mask(
    batch: int,
    num_new: int,
    num_cached: int,
    padding_mask_BK: torch.Tensor | None,
    sample_ids_BS: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean (B, 1, S, K) mask: causal, no padded keys, no key from another packed sample.

    Returns None when plain causal attention (or, when decoding, no mask at all) is exact, so
    SDPA can take its fast path.
    """
    if padding_mask_BK is None and sample_ids_BS is None and (num_cached == 0 or num_new == 1):
        return None
    keys = num_cached + num_new
    query_pos_S = torch.arange(num_cached, keys, device=device)
    allowed_BSK = (torch.arange(keys, device=device)[None, :] <= query_pos_S[:, None]).expand(
        batch, num_new, keys
    )
    if padding_mask_BK is not None:
        allowed_BSK = allowed_BSK & padding_mask_BK.bool()[:, None, :]
    if sample_ids_BS is not None:
        if num_cached:
            raise ValueError("packed samples (sample_ids) cannot be combined with a KV cache")
        allowed_BSK = allowed_BSK & (sample_ids_BS[:, :, None] == sample_ids_BS[:, None, :])
    # A padded query would see no key at all and SDPA would return NaN; let it see itself.
    allowed_BSK = allowed_BSK.clone()
    allowed_BSK[:, torch.arange(num_new, device=device), query_pos_S] = True
    return allowed_BSK[:, None]


def positions_and_samples(
    attention_mask_BK, position_ids_BS, sample_ids_BS, num_new, num_cached, device
):
    """Fills in position ids and packed-sample ids from whichever of them the caller gave."""
    if position_ids_BS is None:
        if sample_ids_BS is not None:
            # Positions restart at every sample boundary.
            b, s = sample_ids_BS.shape
            idx = torch.arange(s, device=sample_ids_BS.device).expand(b, s)
            starts = torch.ones_like(sample_ids_BS, dtype=torch.bool)
            starts[:, 1:] = sample_ids_BS[:, 1:] != sample_ids_BS[:, :-1]
            start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
            position_ids_BS = idx - start_idx
        elif attention_mask_BK is not None:
            # Left padding: count only real tokens.
            cumulative = attention_mask_BK.long().cumsum(-1) - 1
            position_ids_BS = cumulative.clamp(min=0)[:, num_cached : num_cached + num_new]
        else:
            position_ids_BS = torch.arange(num_cached, num_cached + num_new, device=device)[None]
    elif sample_ids_BS is None and num_cached == 0 and position_ids_BS.shape[-1] > 1:
        # Packed batches may say where samples start only through restarting positions.
        restarts_BS = position_ids_BS == 0
        if bool(restarts_BS[:, 1:].any()):
            sample_ids_BS = restarts_BS.long().cumsum(-1)
    return position_ids_BS, sample_ids_BS


def plan_attention(backend: str, padding_BK, sample_ids_BS, num_new: int, num_cached: int,
                   embeds_BSD: torch.Tensor) -> AttentionPlan:  # fmt: skip
    """Packed samples without padding or cache attend span by span (no S x S mask); padding, a
    KV cache or the `masked` backend take the dense mask."""
    chosen = resolve_backend(backend, embeds_BSD.device, embeds_BSD.dtype)
    if sample_ids_BS is not None and padding_BK is None and num_cached == 0 and chosen != "masked":
        return AttentionPlan(spans=PackedSpans(sample_ids_BS), backend=chosen)
    mask_B1SK = build_attention_mask(embeds_BSD.shape[0], num_new, num_cached, padding_BK,
                                     sample_ids_BS, embeds_BSD.device)  # fmt: skip
    return AttentionPlan(mask_B1SK=mask_B1SK)
