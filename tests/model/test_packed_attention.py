"""Packed attention without a mask, the supervised-only loss and activation checkpointing each
equal their reference (the dense-mask path, full logits, no checkpointing): values and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from model.packed_attention import PackedSpans, flash_attn_installed, resolve_backend
from model.supervised_loss import next_token_loss, supervised_loss
from tests.conftest import image_prompt, tiny_model

PAD = 0


def packed_batch(width: int = 40):
    """Two packed rows of text-only and image samples (visual spans inside), padded at the end."""
    rows = [
        [image_prompt([1, 2], 1, [9, 10]), [11, 12, 13], image_prompt([3], 2, [14, 15])],
        [[16, 17, 18, 19, 20], image_prompt([4, 21], 3, [22]), [23]],
    ]
    ids, positions, samples = [], [], []
    for row in rows:
        flat = [t for sample in row for t in sample]
        pad = width - len(flat)
        ids.append(flat + [PAD] * pad)
        positions.append([p for sample in row for p in range(len(sample))] + [0] * pad)
        samples.append([i for i, s in enumerate(row) for _ in s] + [len(row)] * pad)
    ids = torch.tensor(ids)
    tiles = int((ids == 5).sum()) // 4
    torch.manual_seed(1)
    labels = torch.where(torch.rand(ids.shape) < 0.5, ids, torch.full_like(ids, -100))
    labels[ids == PAD] = -100
    return {"input_ids": ids, "position_ids": torch.tensor(positions),
            "sample_ids": torch.tensor(samples), "pixel_values": torch.randn(tiles, 3, 56, 56),
            "labels": labels, "loss_weights": torch.rand(ids.shape)}  # fmt: skip


def trained_model(attention_experts: bool, **overrides):
    model = tiny_model(visual_attention_experts=attention_experts, **overrides).train()
    with torch.no_grad():  # experts that differ from the text weights, so routing shows
        for name, param in model.named_parameters():
            if ".visual_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    return model


def forward_and_grads(model, batch, **kwargs):
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "sample_ids", "pixel_values")}
    logits = model(**inputs).logits
    (logits.square().mean() + logits[..., :7].sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return logits, grads


def assert_same_grads(grads, reference, atol=1e-5):
    assert grads.keys() == reference.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], atol=atol, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")  # fmt: skip


def backend_pair(backend: str, attention_experts: bool, device: str = "cpu"):
    # Compiled flex attention (CUDA) takes heads of 16 or more.
    model = trained_model(attention_experts, **({"head_dim": 16} if device == "cuda" else {}))
    model = model.to(device)
    if backend == "flex" and device == "cpu":
        model.eval()  # forward only: torch has no flex attention backward on CPU
    reference = copy.deepcopy(model)
    reference.set_packed_attention("masked")
    model.set_packed_attention(backend)
    return model, reference


@pytest.mark.parametrize("attention_experts", [False, True])
def test_per_sample_attention_equals_the_dense_mask(attention_experts):
    batch = packed_batch()
    model, reference = backend_pair("per_sample", attention_experts)
    logits, grads = forward_and_grads(model, batch)
    ref_logits, ref_grads = forward_and_grads(reference, batch)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-4)
    assert_same_grads(grads, ref_grads)


@pytest.mark.parametrize("attention_experts", [False, True])
def test_flex_attention_forward_equals_the_dense_mask(attention_experts):
    """On CPU flex attention has no backward (torch raises); its gradients: the GPU test."""
    batch = packed_batch()
    model, reference = backend_pair("flex", attention_experts)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "sample_ids", "pixel_values")}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["auto", "flex", "per_sample"])
def test_packed_backends_on_cuda_equal_the_dense_mask(backend):
    batch = {k: v.cuda() for k, v in packed_batch().items()}
    model, reference = backend_pair(backend, True, "cuda")
    logits, grads = forward_and_grads(model, batch)
    ref_logits, ref_grads = forward_and_grads(reference, batch)
    torch.testing.assert_close(logits, ref_logits, atol=2e-4, rtol=1e-3)
    assert_same_grads(grads, ref_grads, atol=2e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["flash_varlen", "flex"])
def test_16_bit_paths_on_cuda_are_as_close_as_the_dense_mask(backend):
    """In bf16 a path is at most twice as far from the float32 dense-mask reference as the dense
    mask in bf16 is (flash-attn's own criterion): values and every gradient."""
    if backend == "flash_varlen" and not flash_attn_installed():
        pytest.skip("flash-attn is not installed")
    batch = {k: v.cuda() for k, v in packed_batch().items()}
    _, reference = backend_pair("masked", True, "cuda")
    path, masked = copy.deepcopy(reference).bfloat16(), copy.deepcopy(reference).bfloat16()
    path.set_packed_attention(backend)
    ref_logits, ref_grads = forward_and_grads(reference, batch)
    (logits, grads), (masked_logits, masked_grads) = (forward_and_grads(m, batch)
                                                      for m in (path, masked))  # fmt: skip

    def error(x, ref):
        return (x.float() - ref).abs().max().item()

    assert error(logits, ref_logits) <= 2 * error(masked_logits, ref_logits) + 1e-3
    for name, ref in ref_grads.items():
        assert error(grads[name], ref) <= 2 * error(masked_grads[name], ref) + 1e-3, name


def test_spans_are_found_per_row():
    spans = PackedSpans(packed_batch()["sample_ids"])
    assert spans.lengths == [[10, 3, 13, 14], [5, 17, 1, 17]]
    assert spans.cu_seqlens.tolist() == [0, 10, 13, 26, 40, 45, 62, 63, 80]


def test_backend_choice_by_device():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, torch.float32) == "per_sample"
    assert resolve_backend("masked", cpu, torch.float32) == "masked"
    with pytest.raises(ValueError, match="must be one of"):
        resolve_backend("sdpa", cpu, torch.float32)
    with pytest.raises(ValueError, match="needs the flash-attn package, a CUDA GPU"):
        resolve_backend("flash_varlen", cpu, torch.bfloat16)
    assert resolve_backend("flex", cpu, torch.float32) == "flex"  # forward: a test reference
    with pytest.raises(ValueError, match="flex trains on CUDA only"):
        resolve_backend("flex", cpu, torch.float32, training=True)
    model = tiny_model().train()
    with pytest.raises(ValueError, match="flex trains on CUDA only"):
        model.set_packed_attention("flex")
    model.eval().set_packed_attention("flex")
    assert model.config.packed_attention == "flex"


@pytest.mark.parametrize("chunk", [4096, 3])
def test_supervised_loss_equals_the_full_logits_loss(chunk):
    """Same loss and gradients as full logits; the head frozen as in S1.1, weights as in 'sqrt'."""
    batch = packed_batch()
    model = trained_model(attention_experts=False)
    model.lm_head.weight.requires_grad_(False)
    reference = copy.deepcopy(model)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "sample_ids", "pixel_values")}

    hidden = model.model(**inputs).last_hidden_state
    loss = supervised_loss(hidden, model.lm_head, batch["labels"], batch["loss_weights"], chunk)
    loss.backward()
    ref_logits = reference(**inputs).logits
    ref_loss = next_token_loss(ref_logits, batch["labels"], batch["loss_weights"])
    ref_loss.backward()

    torch.testing.assert_close(loss, ref_loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert_same_grads(grads, {n: p.grad for n, p in reference.named_parameters()
                              if p.grad is not None})  # fmt: skip


def test_training_forward_builds_no_logits_and_matches():
    batch = packed_batch()
    model = trained_model(attention_experts=True)
    out = model(**batch, full_logits=False)
    assert out.logits is None
    full = model(**batch)
    torch.testing.assert_close(out.loss, full.loss)
    with pytest.raises(ValueError, match="give labels"):
        model(input_ids=batch["input_ids"], full_logits=False)


def test_supervised_loss_without_supervised_tokens_is_zero_with_a_graph():
    model = trained_model(attention_experts=False)
    batch = packed_batch()
    loss = model(**{**batch, "labels": torch.full_like(batch["labels"], -100)},
                 full_logits=False).loss  # fmt: skip
    loss.backward()
    assert loss.item() == 0.0


@pytest.mark.parametrize("mode", ["full", "every_n"])
def test_activation_checkpointing_gives_the_same_gradients(mode):
    batch = packed_batch()
    model = trained_model(attention_experts=True)
    model.model.embed_tokens.weight.requires_grad_(False)  # S1.x: frozen text inputs
    reference = copy.deepcopy(model)
    model.set_activation_checkpointing(mode, every=2)
    checkpointed = [layer.gradient_checkpointing for layer in model.model.layers]
    assert checkpointed == ([True, True] if mode == "full" else [True, False])

    logits, grads = forward_and_grads(model, batch)
    ref_logits, ref_grads = forward_and_grads(reference, batch)
    torch.testing.assert_close(logits, ref_logits)
    assert_same_grads(grads, ref_grads, atol=1e-6)
    model.set_activation_checkpointing("none")
    assert not any(layer.gradient_checkpointing for layer in model.model.layers)
    with pytest.raises(ValueError, match="none|full|every_n"):
        model.set_activation_checkpointing("some")
