"""InternVL-style dynamic high resolution: grid by aspect ratio, tiles + thumbnail, a token cap.

The tiling itself is transformers' (`GotOcr2ImageProcessorPil` implements InternVL's
`dynamic_preprocess`); this module adds what the curriculum needs on top: ImageNet statistics, the
thumbnail switch and a cap on visual tokens per image (the paper's "max patches": 1,280 / 1,792 /
3,328 / 6,400, where one patch is one 28x28-px visual token, so 256 per 448-px tile).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GotOcr2ImageProcessorPil
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorKwargs,
    get_optimal_tiled_canvas,
)

from model.configuration import MonoInternVLConfig


def max_tiles_within_budget(
    max_visual_tokens: int, tokens_per_tile: int, use_thumbnail: bool
) -> int:
    """Largest tile grid whose tokens (thumbnail included) fit in `max_visual_tokens`.

    Raises:
        ValueError: the budget cannot hold even one tile.
    """
    budget_tiles = max_visual_tokens // tokens_per_tile
    if budget_tiles < 1:
        raise ValueError(
            f"max_visual_tokens ({max_visual_tokens}) is below one tile ({tokens_per_tile} tokens)"
        )
    # Any grid of more than one tile brings a thumbnail along, which costs one more tile.
    return budget_tiles - 1 if use_thumbnail and budget_tiles > 1 else budget_tiles


@dataclass(frozen=True)
class TilePlan:
    """How one image is cut: grid, tiles sent to the model, visual tokens they make."""

    columns: int
    rows: int
    num_tiles: int
    num_tokens: int

    @property
    def has_thumbnail(self) -> bool:
        return self.num_tiles > self.columns * self.rows


def plan_tiles(
    width: int,
    height: int,
    *,
    tile_size: int,
    tokens_per_tile: int,
    min_tiles: int = 1,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    max_visual_tokens: int | None = None,
) -> TilePlan:
    """Chooses the grid for an image the way the processor will (InternVL's aspect-ratio rule)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max_visual_tokens is not None:
        max_tiles = min(
            max_tiles, max_tiles_within_budget(max_visual_tokens, tokens_per_tile, use_thumbnail)
        )
    min_tiles = min(min_tiles, max_tiles)
    if max_tiles <= 1:
        columns, rows = 1, 1
    else:
        columns, rows = get_optimal_tiled_canvas(
            (height, width), (tile_size, tile_size), min_tiles, max_tiles
        )
    num_tiles = columns * rows + (1 if use_thumbnail and columns * rows > 1 else 0)
    return TilePlan(columns, rows, num_tiles, num_tiles * tokens_per_tile)


class MonoInternVLImageProcessorKwargs(GotOcr2ImageProcessorKwargs, total=False):
    """Per-call options on top of the tiling ones (the thumbnail switch is per processor)."""

    max_visual_tokens: int | None
    tokens_per_tile: int


class MonoInternVLImageProcessor(GotOcr2ImageProcessorPil):
    """Images -> `pixel_values` (tiles, 3, S, S) and `num_patches` (tiles per image, thumbnail in).

    `min_patches` / `max_patches` are transformers' names for the tile-count bounds.
    """

    valid_kwargs = MonoInternVLImageProcessorKwargs
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 448, "width": 448}
    crop_to_patches = True
    min_patches = 1
    max_patches = 12
    use_thumbnail = True
    max_visual_tokens = None
    tokens_per_tile = 256

    @classmethod
    def from_model_config(
        cls, config: MonoInternVLConfig, **overrides
    ) -> MonoInternVLImageProcessor:
        """The processor whose tiles match `config`'s visual tokenizer."""
        kwargs = dict(
            size={"height": config.tile_size, "width": config.tile_size},
            min_patches=config.min_tiles,
            max_patches=config.max_tiles,
            use_thumbnail=config.use_thumbnail,
            tokens_per_tile=config.tokens_per_tile,
        )
        return cls(**{**kwargs, **overrides})

    def plan(self, width: int, height: int, max_visual_tokens: int | None = None) -> TilePlan:
        """The tiling this processor applies to an image of that size."""
        return plan_tiles(
            width,
            height,
            tile_size=self.size["height"] if isinstance(self.size, dict) else self.size.height,
            tokens_per_tile=self.tokens_per_tile,
            min_tiles=self.min_patches,
            max_tiles=self.max_patches,
            use_thumbnail=self.use_thumbnail,
            max_visual_tokens=max_visual_tokens or self.max_visual_tokens,
        )

    def crop_image_to_patches(self, image, min_patches, max_patches, use_thumbnail=True, **kwargs):
        return super().crop_image_to_patches(
            image, min_patches, max_patches, use_thumbnail=self.use_thumbnail, **kwargs
        )

    def _preprocess(self, images, *args, max_patches: int = 12, min_patches: int = 1, **kwargs):
        tokens_per_tile = kwargs.pop("tokens_per_tile", self.tokens_per_tile)
        max_visual_tokens = kwargs.pop("max_visual_tokens", self.max_visual_tokens)
        if max_visual_tokens is not None:
            max_patches = min(
                max_patches,
                max_tiles_within_budget(max_visual_tokens, tokens_per_tile, self.use_thumbnail),
            )
        return super()._preprocess(
            images,
            *args,
            max_patches=max_patches,
            min_patches=min(min_patches, max_patches),
            **kwargs,
        )
