"""`MonoInternVLConfig` validates at construction and names the offending field."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(num_attention_heads=3), "num_key_value_heads"),
        (dict(tile_size=50), "tile_size"),
        (dict(downsample_ratio=0.3), "downsample_ratio"),
        (dict(hidden_act="gelu"), "hidden_act"),
        (dict(image_token_id=999), "image_token_id"),
        (dict(min_tiles=5, max_tiles=2), "min_tiles"),
        (dict(hidden_size="wide"), "hidden_size"),
    ],
)
def test_bad_values_raise_with_the_field_name(overrides, field):
    with pytest.raises(Exception, match=field):
        tiny_config(**overrides)


def test_derived_sizes():
    config = tiny_config()
    assert config.head_dim == 8 and config.tokens_per_tile == 4
    assert tiny_config(tile_size=448).tokens_per_tile == 256
    assert config.vision_options.tile_size == 56
