"""The visual tokenizer, x_v = MLP(PatchEmbed(I) + PE) (paper eq. 1).

Legend: N tiles, C patch-embedding width, D LLM width, G grid side in patches, r = 1/downsample.
A 14-px patch embedding followed by an r x r pixel shuffle gives one token per 28x28 px
(the paper's "stride 28"). Parameter names follow the released InternVL patch model so the
official checkpoint maps one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.configuration import MonoInternVLConfig


def pixel_shuffle(x_NGGC: torch.Tensor, scale: float) -> torch.Tensor:
    """InternVL's pixel shuffle (version 2): (N, G, G, C) -> (N, G*s, G*s, C/s^2)."""
    n, w, h, c = x_NGGC.shape
    x = x_NGGC.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


class VisionTokenizer(nn.Module):
    """Tiles (N, 3, S, S) -> visual tokens (N, tokens_per_tile, D) in the LLM's embedding space."""

    def __init__(self, config: MonoInternVLConfig):
        super().__init__()
        width = config.vision_hidden_size
        self.patch_size = config.patch_size
        self.grid = config.tile_size // config.patch_size
        self.downsample_ratio = config.downsample_ratio
        self.patch_embedding = nn.Conv2d(
            config.num_channels, width, kernel_size=config.patch_size, stride=config.patch_size
        )
        # The class token is kept only so the official layout round-trips: with no ViT encoder
        # after it, nothing reads it, so it is never computed.
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, width))
        merged = width * round(1 / config.downsample_ratio) ** 2
        self.projector = nn.Sequential(
            nn.LayerNorm(merged, eps=config.projector_layer_norm_eps),
            nn.Linear(merged, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def grid_position_embedding(self, height: int, width: int) -> torch.Tensor:
        """Learnable PE of the trained grid, bicubically resized to (height, width) patches."""
        pe_1PC = self.position_embedding[:, 1:, :]
        if (height, width) == (self.grid, self.grid):
            return pe_1PC
        pe = pe_1PC.float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(height, width), mode="bicubic", align_corners=False)
        return pe.reshape(1, -1, height * width).permute(0, 2, 1).to(pe_1PC.dtype)

    def forward(self, pixel_values_N3SS: torch.Tensor) -> torch.Tensor:
        if pixel_values_N3SS.ndim != 4:
            raise ValueError(
                f"pixel_values must be (tiles, 3, H, W), got {tuple(pixel_values_N3SS.shape)}"
            )
        weight = self.patch_embedding.weight
        x_NCgg = self.patch_embedding(pixel_values_N3SS.to(weight.dtype))
        n, c, gh, gw = x_NCgg.shape
        if gh != gw:
            raise ValueError(f"tiles must be square, got a {gh}x{gw} patch grid")
        x_NPC = x_NCgg.flatten(2).transpose(1, 2) + self.grid_position_embedding(gh, gw)
        x_NggC = pixel_shuffle(x_NPC.reshape(n, gh, gw, c), self.downsample_ratio)
        return self.projector(x_NggC.reshape(n, -1, x_NggC.shape[-1]))
