"""Training-time modes: gradient checkpointing gives the same gradients; bf16 runs end to end."""

from __future__ import annotations

import copy

import torch

from tests.conftest import image_prompt, tiny_model


def test_gradient_checkpointing_keeps_gradients():
    model = tiny_model(visual_attention_experts=True).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.gradient_checkpointing_enable()
    ids = torch.tensor([image_prompt([1, 2], 2, [20, 21, 22])])
    pixels = torch.randn(2, 3, 56, 56)
    for m in (model, checkpointed):
        m(input_ids=ids, pixel_values=pixels, labels=ids).loss.backward()
    grads = dict(checkpointed.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name].grad, msg=name)


def test_bfloat16_forward_and_generate():
    model = tiny_model().to(torch.bfloat16)
    ids = torch.tensor([image_prompt([1, 2], 1, [3])])
    pixels = torch.randn(1, 3, 56, 56)
    assert model(input_ids=ids, pixel_values=pixels).logits.dtype == torch.bfloat16
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4)
