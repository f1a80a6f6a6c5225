"""Multimodal mixture-of-experts, static routing (paper eq. 5): gather, run each expert, scatter.

Legend: B batch, S sequence, N = B*S flattened tokens, D model width, F FFN width,
Nt / Nv text / visual tokens.

Routing is static because a token's expert is fixed by its modality, which the input ids already
say; the route is therefore computed once per forward and shared by every layer (no router, no
load balancing, no capacity factor). Each expert runs only on its own tokens, instead of running
both experts on every token and masking, which costs two FFNs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TokenFn = Callable[[torch.Tensor], torch.Tensor]


class ModalityRoute:
    """Where the text and visual tokens of a batch are, as flat indices into (B*S)."""

    def __init__(self, visual_mask_BS: torch.Tensor | None, keep_visual_in_graph: bool = False):
        self.keep_visual_in_graph = keep_visual_in_graph
        """With no visual token, still run the visual experts (on one token, weight 0): see
        `MonoInternVLModel.forward`."""
        self.visual_idx_Nv: torch.Tensor | None = None
        self.text_idx_Nt: torch.Tensor | None = None
        self.all_visual = False
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
        y_text = text_fn(x_ND.index_select(0, self.text_idx_Nt))
        y_visual = visual_fn(x_ND.index_select(0, self.visual_idx_Nv))
        y_ND = y_text.new_empty(b * s, y_text.shape[-1])
        y_ND.index_copy_(0, self.text_idx_Nt, y_text)
        y_ND.index_copy_(0, self.visual_idx_Nv, y_visual.to(y_text.dtype))
        return y_ND.view(b, s, -1)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the Llama / Qwen2 / InternLM2 FFN (InternLM2: w1, w3, w2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x_ND)) * self.up_proj(x_ND))
