"""Gather/scatter routing equals the masked (compute-both-experts) reference: values, gradients."""

from __future__ import annotations

import copy

import pytest
import torch

import model.modeling as modeling
from model.mmoe import ModalityRoute, SwiGLU
from tests.conftest import image_prompt, tiny_model


class MaskedRoute:
    """The official release's way: every expert on every token, then pick by modality."""

    def __init__(self, visual_mask_BS, keep_visual_in_graph=False):
        self.mask = visual_mask_BS
        self.keep_visual_in_graph = False  # every expert runs on every token anyway

    @property
    def all_text(self):
        return self.mask is None or not bool(self.mask.any())

    def apply(self, x_BSD, text_fn, visual_fn):
        if visual_fn is None or self.mask is None:
            return text_fn(x_BSD)
        return torch.where(self.mask[..., None], visual_fn(x_BSD), text_fn(x_BSD))


@pytest.mark.parametrize("max_runs", [256, 0], ids=["runs", "gather"])
@pytest.mark.parametrize("visual_share", [0.0, 0.3, 1.0])
def test_route_apply_matches_masked_reference(visual_share, max_runs, monkeypatch):
    """Both ways of routing (slicing runs, gathering rows) equal every-expert-then-select."""
    monkeypatch.setattr("model.mmoe.MAX_RUNS", max_runs)
    torch.manual_seed(0)
    text, visual = SwiGLU(16, 32), SwiGLU(16, 32)
    mask = torch.rand(3, 10) < visual_share
    x = torch.randn(3, 10, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    text_ref, visual_ref = copy.deepcopy(text), copy.deepcopy(visual)

    route = ModalityRoute(mask)
    assert (route.runs is not None) == (max_runs > 0 and 0 < visual_share < 1)
    out = route.apply(x, text, visual)
    ref = MaskedRoute(mask).apply(x_ref, text_ref, visual_ref)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    pairs = zip(
        [*text.parameters(), *visual.parameters()],
        [*text_ref.parameters(), *visual_ref.parameters()],
    )
    for p, p_ref in pairs:
        if p.grad is None:  # an expert with no token: the reference gives it zeros
            assert not p_ref.grad.any()
        else:
            torch.testing.assert_close(p.grad, p_ref.grad)


@pytest.mark.parametrize("attention_experts", [False, True])
def test_model_with_gather_scatter_matches_masked_reference(monkeypatch, attention_experts):
    model = tiny_model(visual_attention_experts=attention_experts).train()
    # Make the experts differ from the text weights so a wrong route would show.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".visual_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    reference = copy.deepcopy(model)
    ids = torch.tensor([image_prompt([1, 2, 3], 2, [9, 10, 11]), image_prompt([4], 2, [12] * 5)])
    pixels = torch.randn(4, 3, 56, 56)
    labels = ids.clone()

    out = model(input_ids=ids, pixel_values=pixels, labels=labels)
    monkeypatch.setattr(modeling, "ModalityRoute", MaskedRoute)
    ref = reference(input_ids=ids, pixel_values=pixels, labels=labels)

    torch.testing.assert_close(out.logits, ref.logits)
    out.loss.backward()
    ref.loss.backward()
    grads = dict(reference.named_parameters())
    checked = 0
    for name, param in model.named_parameters():
        if param.grad is None:
            assert grads[name].grad is None or not grads[name].grad.any(), name
            continue
        torch.testing.assert_close(param.grad, grads[name].grad, msg=name)
        checked += ".visual_" in name
    assert checked == (14 if attention_experts else 6)  # every expert weight got a gradient


def test_route_handles_text_only_and_visual_only_batches():
    ffn_t, ffn_v = SwiGLU(8, 16), SwiGLU(8, 16)
    x = torch.randn(2, 5, 8)
    assert torch.equal(ModalityRoute(None).apply(x, ffn_t, ffn_v), ffn_t(x))
    assert torch.equal(
        ModalityRoute(torch.zeros(2, 5, dtype=torch.bool)).apply(x, ffn_t, ffn_v), ffn_t(x)
    )
    assert torch.equal(
        ModalityRoute(torch.ones(2, 5, dtype=torch.bool)).apply(x, ffn_t, ffn_v), ffn_v(x)
    )


@pytest.mark.parametrize("attention_experts", [False, True])
def test_training_on_a_batch_without_images_still_gives_every_visual_parameter_a_gradient(
    attention_experts,
):
    """Data-parallel workers must all reduce the same gradients: a worker whose batch has no
    image gets zeros for the visual parameters, not nothing; the logits do not change."""
    model = tiny_model(visual_attention_experts=attention_experts)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    expected = model(input_ids=ids).logits  # eval: the visual path is not run
    out = model.train()(input_ids=ids, labels=ids)
    assert torch.equal(out.logits, expected)
    out.loss.backward()
    visual = {n: p.grad for n, p in model.named_parameters()
              if n.startswith("model.vision.") or ".visual_" in n}  # fmt: skip
    unused = {"model.vision.class_embedding"}  # kept only for the official layout
    assert len(visual) > len(unused) + (14 if attention_experts else 6)
    for name, grad in visual.items():
        if name not in unused:
            assert grad is not None and not grad.any(), name
