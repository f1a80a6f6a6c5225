"""KV-cached generation, left padding and packed samples agree with the plain computation."""

from __future__ import annotations

import torch

from tests.conftest import image_prompt, tiny_model


def test_generate_with_cache_equals_without_cache():
    model = tiny_model(seed=1, visual_attention_experts=True)
    ids = torch.tensor([image_prompt([1, 2], 3, [30, 31, 32])])
    pixels = torch.randn(3, 3, 56, 56)
    common = dict(input_ids=ids, pixel_values=pixels, max_new_tokens=12, do_sample=False)
    cached = model.generate(**common, use_cache=True)
    uncached = model.generate(**common, use_cache=False)
    assert cached.shape[1] == ids.shape[1] + 12
    assert torch.equal(cached, uncached)
    # The image matters, and generation never emits image placeholders.
    other = model.generate(**{**common, "pixel_values": torch.randn(3, 3, 56, 56)}, use_cache=True)
    assert not torch.equal(cached, other)
    assert not set(cached[0, ids.shape[1] :].tolist()) & {5, 6, 7}


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = tiny_model(seed=2)
    long = image_prompt([1, 2, 3, 4], 1, [40, 41])
    short = image_prompt([9], 1, [42])
    pad = len(long) - len(short)
    ids = torch.tensor([long, [0] * pad + short])
    mask = torch.tensor([[1] * len(long), [0] * pad + [1] * len(short)])
    pixels = torch.randn(2, 3, 56, 56)
    batch = model.generate(
        input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=8, do_sample=False
    )
    for row, (prompt, tile) in enumerate([(long, pixels[:1]), (short, pixels[1:])]):
        alone = model.generate(
            input_ids=torch.tensor([prompt]), pixel_values=tile, max_new_tokens=8, do_sample=False
        )
        assert batch[row, -8:].tolist() == alone[0, -8:].tolist()


def test_packed_batch_equals_samples_run_one_by_one():
    model = tiny_model(seed=3, visual_attention_experts=True)
    samples = [
        image_prompt([1, 2], 1, [20, 21, 22]),
        [23, 24, 25, 26, 27],
        image_prompt([3], 2, [28]),
    ]
    tiles = [torch.randn(1, 3, 56, 56), torch.zeros(0, 3, 56, 56), torch.randn(2, 3, 56, 56)]
    packed_ids = torch.tensor([sum(samples, [])])
    positions = torch.tensor([sum((list(range(len(s))) for s in samples), [])])
    packed = model(
        input_ids=packed_ids, pixel_values=torch.cat(tiles), position_ids=positions
    ).logits

    start = 0
    for sample, tile in zip(samples, tiles):
        alone = model(
            input_ids=torch.tensor([sample]), pixel_values=tile if len(tile) else None
        ).logits
        torch.testing.assert_close(
            packed[:, start : start + len(sample)], alone, atol=1e-5, rtol=1e-5
        )
        start += len(sample)


def test_sample_ids_mark_boundaries_like_restarting_positions():
    model = tiny_model(seed=4)
    ids = torch.randint(8, 64, (1, 12))
    sample_ids = torch.tensor([[0] * 5 + [1] * 4 + [2] * 3])
    positions = torch.tensor([list(range(5)) + list(range(4)) + list(range(3))])
    by_ids = model(input_ids=ids, sample_ids=sample_ids).logits
    by_positions = model(input_ids=ids, position_ids=positions).logits
    unpacked = model(input_ids=ids).logits
    torch.testing.assert_close(by_ids, by_positions)
    assert not torch.allclose(by_ids[:, 5:], unpacked[:, 5:])
