"""Multimodal mixture-of-experts, static routing (paper eq. 5): gather, run each expert, scatter.

Legend: B batch, S sequence, N = B*S flattened tokens, D model width, F FFN width,
Nt / Nv text / visual tokens.

Routing is static because a token's expert is fixed by its modality, which the input ids already
say; the route is therefore computed once per forward and shared by every layer (no router, no
load balancing, no capacity factor). Each expert runs only on its own tokens, instead of running
both experts on every token and masking, which costs two FFNs. An image is a contiguous span of
tokens, so a pack is a few runs of one modality: the route splits them as slices and joins them
with one copy each way (`torch.split` / `torch.cat`) instead of gathering scattered rows; a mask
with many runs (scattered tokens) gathers by index instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TokenFn = Callable[[torch.Tensor], torch.Tensor]
MAX_RUNS = 256
"""Above this many modality runs, gathering rows by index beats slicing runs."""


class ModalityRoute:
    """Where the text and visual tokens of a batch are, as flat indices into (B*S)."""

    def __init__(self, visual_mask_BS: torch.Tensor | None, keep_visual_in_graph: bool = False):
        self.keep_visual_in_graph = keep_visual_in_graph
        """With no visual token, still run the visual experts (on one token, weight 0): see
        `MonoInternVLModel.forward`."""
        self.visual_idx_Nv: torch.Tensor | None = None
        self.text_idx_Nt: torch.Tensor | None = None
        self.all_visual = False
        self.runs: list[tuple[bool, int]] | None = None
        """(is visual, length) of each run of one modality, in order, when there are few."""
        if visual_mask_BS is None:
            return
        flat_N = visual_mask_BS.reshape(-1)
        num_visual = int(flat_N.sum())
        if num_visual == 0:
            return
        if num_visual == flat_N.numel():
            self.all_visual = True
            return
        self.visual_idx_Nv = flat_N.nonzero().squeeze(1)
        self.text_idx_Nt = (~flat_N).nonzero().squeeze(1)
        changes = (flat_N[1:] != flat_N[:-1]).nonzero().squeeze(1) + 1
        if len(changes) < MAX_RUNS:
            bounds = [0, *changes.tolist(), flat_N.numel()]
            first = bool(flat_N[0])
            self.runs = [(first ^ (i % 2 == 1), b - a)
                         for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]  # fmt: skip

    @property
    def all_text(self) -> bool:
        return self.visual_idx_Nv is None and not self.all_visual

    def apply(
        self, x_BSD: torch.Tensor, text_fn: TokenFn, visual_fn: TokenFn | None
    ) -> torch.Tensor:
        """`text_fn` on text tokens, `visual_fn` on visual ones, results in the original order."""
        if visual_fn is None:
            return text_fn(x_BSD)
        if self.all_text:
            y_BSD = text_fn(x_BSD)
            if self.keep_visual_in_graph:
                y_BSD = y_BSD + 0.0 * visual_fn(x_BSD[:1, :1]).sum()
            return y_BSD
        if self.all_visual:
            return visual_fn(x_BSD)
        b, s, d = x_BSD.shape
        x_ND = x_BSD.reshape(b * s, d)
        if self.runs is not None:
            return self._apply_runs(x_ND, text_fn, visual_fn).view(b, s, -1)
        y_text = text_fn(x_ND.index_select(0, self.text_idx_Nt))
        y_visual = visual_fn(x_ND.index_select(0, self.visual_idx_Nv))
        y_ND = y_text.new_empty(b * s, y_text.shape[-1])
        y_ND.index_copy_(0, self.text_idx_Nt, y_text)
        y_ND.index_copy_(0, self.visual_idx_Nv, y_visual.to(y_text.dtype))
        return y_ND.view(b, s, -1)

    def _apply_runs(self, x_ND: torch.Tensor, text_fn: TokenFn, visual_fn: TokenFn):
        """Each expert on its runs joined into one batch; its outputs split back into place."""
        pieces = x_ND.split([length for _, length in self.runs])
        text = [p for p, (visual, _) in zip(pieces, self.runs) if not visual]
        visual = [p for p, (is_visual, _) in zip(pieces, self.runs) if is_visual]
        y_text = text_fn(torch.cat(text) if len(text) > 1 else text[0])
        y_visual = visual_fn(torch.cat(visual) if len(visual) > 1 else visual[0])
        y_visual = y_visual.to(y_text.dtype)
        outputs = {False: iter(y_text.split([len(p) for p in text])),
                   True: iter(y_visual.split([len(p) for p in visual]))}  # fmt: skip
        return torch.cat([next(outputs[is_visual]) for is_visual, _ in self.runs])


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the Llama / Qwen2 / InternLM2 FFN (InternLM2: w1, w3, w2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x_ND)) * self.up_proj(x_ND))
