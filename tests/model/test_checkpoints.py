"""Checkpoint formats: Hugging Face save/load and the official Mono-InternVL-2B layout, exact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from model.modeling import MonoInternVLForCausalLM
from model.official import from_official_state, load_official, save_official, to_official_state
from tests.conftest import image_prompt, tiny_model


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_save_pretrained_round_trip_is_exact(tmp_path):
    model = tiny_model(visual_attention_experts=True)
    model.save_pretrained(tmp_path)
    again = MonoInternVLForCausalLM.from_pretrained(tmp_path).eval()
    _assert_same_state(model.state_dict(), again.state_dict())
    assert again.config.visual_attention_experts and again.config.image_token_id == 5
    ids = torch.tensor([image_prompt([1], 1, [2])])
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.equal(
        model(input_ids=ids, pixel_values=pixels).logits,
        again(input_ids=ids, pixel_values=pixels).logits,
    )


def test_official_layout_names_and_round_trip(tmp_path):
    model = tiny_model()
    state = model.state_dict()
    official = to_official_state(state, model.config)
    expected = {
        "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.position_embedding", "mlp1.0.weight", "mlp1.1.weight",
        "mlp1.3.weight", "language_model.model.tok_embeddings.weight",
        "language_model.model.layers.1.attention.wqkv.weight",
        "language_model.model.layers.1.attention.wo.weight",
        "language_model.model.layers.1.attention_norm.weight",
        "language_model.model.layers.1.ffn_norm.weight",
        "language_model.model.layers.1.feed_forward.w2.weight",
        "language_model.model.layers.1.feed_forward_ve.w3.weight",
        "language_model.model.norm.weight", "language_model.output.weight",
    }  # fmt: skip
    assert expected <= official.keys()
    assert len(official) == len(state) - 2 * 2  # q, k, v -> one wqkv in each of 2 layers
    _assert_same_state(from_official_state(official, model.config), state)

    save_official(model, tmp_path)
    assert load_file(tmp_path / "model.safetensors").keys() == official.keys()
    _assert_same_state(load_official(tmp_path).state_dict(), state)


def test_official_layout_refuses_visual_attention_experts():
    model = tiny_model(visual_attention_experts=True)
    with pytest.raises(ValueError, match="visual attention experts"):
        to_official_state(model.state_dict(), model.config)


def read_like_the_official_config(config: dict) -> dict:
    """What the released `InternVLChatConfig` and `extract_feature` require of config.json, read
    the way they read it (by key: a missing one fails there as it does here)."""
    vision, llm = config["vision_config"], config["llm_config"]
    assert vision["model_type"] in ("intern_vit_patch", "intern_vit_6b")
    assert llm["architectures"][0] in ("LlamaForCausalLM", "InternLM2ForCausalLM",
                                       "InternLM2VEForCausalLM", "Qwen2ForCausalLM")  # fmt: skip
    # A patch model has no layers: any select_layer but -1 indexes hidden states it lacks.
    assert vision["model_type"] != "intern_vit_patch" or config["select_layer"] == -1
    return {"vision": vision["model_type"], "select_layer": config["select_layer"]}


def test_official_config_is_complete_for_the_official_reader(tmp_path):
    import json

    save_official(tiny_model(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert read_like_the_official_config(config) == {"vision": "intern_vit_patch",
                                                     "select_layer": -1}  # fmt: skip


def test_convert_carries_the_tokenizer_both_ways(tmp_path, tokenizer):
    from transformers import AutoTokenizer

    from flows.cli import main

    save_official(tiny_model(), tmp_path / "official", tokenizer)
    assert main(["convert", "from-official", str(tmp_path / "official"), str(tmp_path / "hf")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").get_vocab() == tokenizer.get_vocab()
    assert main(["convert", "to-official", str(tmp_path / "hf"), str(tmp_path / "again")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "again").get_vocab() == tokenizer.get_vocab()
    _assert_same_state(load_official(tmp_path / "again").state_dict(),
                       load_official(tmp_path / "official").state_dict())
