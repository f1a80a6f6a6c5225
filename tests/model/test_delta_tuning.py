"""The delta-tuning guarantee: text-only behaviour never depends on the visual parameters."""

from __future__ import annotations

import copy

import torch

from model.param_groups import set_trainable
from tests.conftest import image_prompt, tiny_model

VISUAL_GROUPS = ("patch_embed", "visual_ffn", "visual_attention")


def _perturb_visual(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("model.vision.") or ".visual_" in name:
                param.add_(torch.randn_like(param))


def test_text_only_logits_bit_identical_when_visual_weights_change():
    for attention_experts in (False, True):
        model = tiny_model(visual_attention_experts=attention_experts)
        changed = copy.deepcopy(model)
        _perturb_visual(changed)
        ids = torch.randint(8, 64, (3, 17))
        mask = torch.ones_like(ids)
        mask[0, :4] = 0  # some left padding too
        a = model(input_ids=ids, attention_mask=mask).logits
        b = changed(input_ids=ids, attention_mask=mask).logits
        assert torch.equal(a, b)
        # ...and the perturbation was real: with an image the outputs differ.
        img = torch.tensor([image_prompt([1, 2], 1, [3])])
        pixels = torch.randn(1, 3, 56, 56)
        assert not torch.equal(
            model(input_ids=img, pixel_values=pixels).logits,
            changed(input_ids=img, pixel_values=pixels).logits,
        )


def test_training_the_visual_groups_leaves_text_only_logits_bit_identical():
    """An S1.1-style step (patch embed + visual experts train) on image data."""
    model = tiny_model(visual_attention_experts=True)
    text_ids = torch.randint(8, 64, (2, 12))
    before = model(input_ids=text_ids).logits.detach().clone()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainable = set_trainable(model, VISUAL_GROUPS)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([image_prompt([1, 2], 2, [20, 21, 22, 23])])
    for _ in range(3):
        loss = model(input_ids=ids, pixel_values=torch.randn(2, 3, 56, 56), labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    changed = [n for n, p in model.named_parameters() if not torch.equal(p, frozen_before[n])]
    assert changed and set(changed) <= set(trainable)
    assert torch.equal(model(input_ids=text_ids).logits, before)
