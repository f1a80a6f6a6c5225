"""Dynamic high resolution: grids by aspect ratio, the thumbnail rule, the visual-token cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.preprocessing import MonoInternVLImageProcessor, max_tiles_within_budget, plan_tiles

PAPER = dict(tile_size=448, tokens_per_tile=256)


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((448, 448), (1, 1)),
        ((800, 800), (2, 2)),
        ((1000, 1000), (3, 3)),
        ((896, 448), (2, 1)),
        ((448, 1344), (1, 3)),
        ((1600, 400), (4, 1)),
        ((4000, 100), (12, 1)),
        ((2000, 1500), (4, 3)),
    ],
)
def test_grid_follows_aspect_ratio(size, grid):
    plan = plan_tiles(*size, **PAPER)
    assert (plan.columns, plan.rows) == grid
    tiles = grid[0] * grid[1]
    assert plan.num_tiles == tiles + (tiles > 1)  # thumbnail only with more than one tile
    assert plan.num_tokens == plan.num_tiles * 256


def test_thumbnail_rule():
    assert not plan_tiles(448, 448, **PAPER).has_thumbnail
    assert plan_tiles(896, 448, **PAPER).has_thumbnail
    assert not plan_tiles(896, 448, **PAPER, use_thumbnail=False).has_thumbnail
    assert plan_tiles(896, 448, **PAPER, use_thumbnail=False).num_tiles == 2


@pytest.mark.parametrize(
    ("cap", "max_grid"),
    [(1280, 4), (1792, 6), (3328, 12), (6400, 24), (256, 1), (512, 1), (768, 2)],
)
def test_curriculum_caps_bound_tokens(cap, max_grid):
    assert max_tiles_within_budget(cap, 256, use_thumbnail=True) == max_grid
    for size in [(448, 448), (5000, 300), (300, 5000), (3000, 2000), (8000, 8000)]:
        plan = plan_tiles(*size, **PAPER, max_tiles=40, max_visual_tokens=cap)
        assert plan.num_tokens <= cap
        assert plan.columns * plan.rows <= max_grid


def test_cap_below_one_tile_is_an_error():
    with pytest.raises(ValueError, match="below one tile"):
        plan_tiles(448, 448, **PAPER, max_visual_tokens=100)


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def test_processor_output_matches_the_plan():
    processor = MonoInternVLImageProcessor(size={"height": 56, "width": 56}, tokens_per_tile=4)
    images = [_image(100, 100), _image(300, 100), _image(40, 200), _image(56, 56)]
    out = processor(images=images, return_tensors="pt")
    plans = [processor.plan(*image.size) for image in images]
    assert out["num_patches"].tolist() == [p.num_tiles for p in plans] == [5, 13, 6, 1]
    assert out["pixel_values"].shape == (25, 3, 56, 56)
    capped = processor(images=images, return_tensors="pt", max_visual_tokens=12)
    assert capped["num_patches"].tolist() == [processor.plan(*i.size, 12).num_tiles for i in images]
    assert max(capped["num_patches"].tolist()) * 4 <= 12


def test_processor_normalises_with_imagenet_statistics(tmp_path):
    processor = MonoInternVLImageProcessor(size={"height": 56, "width": 56}, max_patches=1)
    white = Image.new("RGB", (56, 56), "white")
    pixels = processor(images=[white], return_tensors="pt")["pixel_values"][0]
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(pixels[:, 0, 0], expected)
    processor.save_pretrained(tmp_path)
    again = MonoInternVLImageProcessor.from_pretrained(tmp_path)
    assert again.max_patches == 1 and again.tokens_per_tile == processor.tokens_per_tile
