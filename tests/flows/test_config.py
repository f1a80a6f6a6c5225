"""Run config: YAML + dotlist overrides, every error with its field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import ConfigError, RunConfig, dump_run_config, load_run_config

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"


def test_demo_config_loads_and_overrides_apply():
    config = load_run_config(
        DEMO, ["model.vision.tile_size=448", "model.experts.visual_attention_experts=true"]
    )
    assert isinstance(config, RunConfig)
    assert config.model.vision.tile_size == 448
    assert config.model.experts.visual_attention_experts is True
    assert config.model.llm_path is None
    again = load_run_config(None, [])
    assert again.model.vision.tile_size == 448  # built-in defaults are the paper's


def test_dump_is_loadable(tmp_path):
    config = load_run_config(DEMO)
    (tmp_path / "c.yaml").write_text(dump_run_config(config))
    assert load_run_config(tmp_path / "c.yaml") == config


def test_errors_name_every_bad_field():
    with pytest.raises(ConfigError) as error:
        load_run_config(
            DEMO, ["model.vision.tile_size=450", "model.tiny_llm.hidden_sise=8", "model.dtype=fp8"]
        )
    message = str(error.value)
    assert "model.vision: Value error, tile_size (450)" in message
    assert "model.tiny_llm.hidden_sise: Extra inputs are not permitted" in message
    assert "model.dtype:" in message


def test_config_is_frozen():
    config = load_run_config(DEMO)
    with pytest.raises(Exception, match="frozen"):
        config.model.vision.tile_size = 1


@pytest.mark.parametrize(("overrides", "match"), [(["model.vision"], "key.path=value")])
def test_malformed_override(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(DEMO, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_run_config("/nonexistent/run.yaml")
