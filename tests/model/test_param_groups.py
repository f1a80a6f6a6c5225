"""Parameter groups: each parameter in exactly one group; counts show per-token activity."""

from __future__ import annotations

import pytest

from model.param_groups import GROUPS, count_parameters, group_of, set_trainable
from tests.conftest import tiny_model


def test_every_parameter_has_one_group_and_all_groups_exist():
    model = tiny_model(visual_attention_experts=True)
    groups = {group_of(name) for name, _ in model.named_parameters()}
    assert groups == set(GROUPS)
    assert group_of("model.layers.0.self_attn.visual_q_proj.weight") == "visual_attention"
    assert group_of("model.layers.0.self_attn.q_proj.weight") == "attention"
    assert group_of("model.layers.3.mlp.up_proj.weight") == "text_ffn"
    assert group_of("model.layers.3.post_attention_layernorm.weight") == "norms"


def test_counts_total_and_active():
    model = tiny_model(visual_attention_experts=True)
    counts = count_parameters(model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.by_group["visual_ffn"] == counts.by_group["text_ffn"]
    assert counts.by_group["visual_attention"] == counts.by_group["attention"]
    assert counts.active_per_text_token == counts.total - sum(
        counts.by_group[g] for g in ("patch_embed", "visual_ffn", "visual_attention")
    )
    assert counts.active_per_visual_token < counts.total


def test_set_trainable_by_group_names():
    model = tiny_model()
    trainable = set_trainable(model, ["patch_embed", "visual_ffn"])
    assert trainable and all(
        n.startswith("model.vision.") or ".visual_mlp." in n for n in trainable
    )
    assert count_parameters(model).trainable == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    with pytest.raises(ValueError, match="unknown parameter groups"):
        set_trainable(model, ["visual_fnn"])
