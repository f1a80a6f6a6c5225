"""The packed stage loader: answer-only masks, no attention across packed samples, exact resume,
corrupt input reported and skipped."""

from __future__ import annotations

import io
import json

import pytest
import torch
import webdataset as wds
from PIL import Image

from model.modeling import MonoInternVLForCausalLM
from model.preprocessing import MonoInternVLImageProcessor
from pipelines.loader.encode import IGNORE
from pipelines.loader.stage_loader import StageLoader
from tests.conftest import tiny_config


def _jpeg(width: int, height: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_stage(folder, shards: int = 3, per_shard: int = 7) -> list[str]:
    """Stage shards like pipelines/stages/build.py writes: KEY.jpg + KEY.json (conversations)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(56, 56), (112, 56), (56, 168), (224, 112)]
    urls = []
    for shard in range(shards):
        url = str(folder / f"shard-{shard:06d}.tar")
        with wds.TarWriter(url) as tar:
            for i in range(per_shard):
                w, h = sizes[(shard + i) % len(sizes)]
                talk = [{"from": "human", "value": "<image>\ndescribe the image"},
                        {"from": "gpt", "value": f"a red circle number {shard} {i}"}]
                if i % 3 == 2:  # a multi-turn sample
                    talk += [{"from": "human", "value": "and the colour?"},
                             {"from": "gpt", "value": "red"}]
                tar.write({"__key__": f"{shard:06d}{i:06d}", "jpg": _jpeg(w, h, "red"),
                           "json": json.dumps({"conversations": talk}).encode()})  # fmt: skip
        urls.append(url)
    return urls


@pytest.fixture
def processor():
    return MonoInternVLImageProcessor.from_model_config(tiny_config(), max_patches=6)


def _loader(urls, tokenizer, processor, **kw):
    return StageLoader(urls, tokenizer, processor, max_patches=24, max_tokens=160,
                       buffer_size=4, report=lambda m: None, **kw)  # fmt: skip


def test_packs_hold_whole_samples_and_learn_only_answers(tmp_path, tokenizer, processor):
    urls = write_stage(tmp_path)
    packs = list(_loader(urls, tokenizer, processor))
    assert sum(p["num_samples"] for p in packs) == 21
    real = sum(p["num_tokens"] for p in packs) / sum(p["input_ids"].shape[1] for p in packs)
    assert real > 0.75  # few padding tokens
    image_token = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for pack in packs:
        ids, labels, pos = pack["input_ids"][0], pack["labels"][0], pack["position_ids"][0]
        assert (labels[ids == image_token] == IGNORE).all()
        starts = (pos[: pack["num_tokens"]] == 0).nonzero().flatten().tolist()
        assert len(starts) == pack["num_samples"]  # positions restart per sample
        tiles = pack["pixel_values"].shape[0]
        assert (ids == image_token).sum() == tiles * processor.tokens_per_tile  # whole images
        learned = ids[labels != IGNORE].tolist()
        assert learned.count(end) >= pack["num_samples"]  # every answer closes its turn
    decoded = tokenizer.decode(packs[0]["input_ids"][0][packs[0]["labels"][0] != IGNORE])
    assert "a red circle number" in decoded and "describe" not in decoded


def test_no_token_attends_across_packed_samples(tmp_path, tokenizer, processor):
    urls = write_stage(tmp_path, shards=1, per_shard=4)
    pack = next(p for p in _loader(urls, tokenizer, processor) if p["num_samples"] >= 2)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                         image_start_token_id=tokenizer.convert_tokens_to_ids("<img>"),
                         image_end_token_id=tokenizer.convert_tokens_to_ids("</img>"))  # fmt: skip
    torch.manual_seed(0)
    model = MonoInternVLForCausalLM(config).eval()

    def logits(p):
        inputs = {k: p[k] for k in ("input_ids", "position_ids", "sample_ids", "pixel_values")}
        with torch.no_grad():
            return model(**inputs).logits[0]

    before = logits(pack)
    # Change the first sample (its text and its image): causal attention alone would let every
    # later sample see it; the pack's sample boundaries must not.
    changed = {k: v.clone() if torch.is_tensor(v) else v for k, v in pack.items()}
    first = changed["sample_ids"][0] == 0
    text = first & (changed["input_ids"][0] != config.image_token_id)
    changed["input_ids"][0][text] = tokenizer.convert_tokens_to_ids("<pad>")
    first_tiles = int((pack["input_ids"][0][first] == config.image_token_id).sum()) // 4
    changed["pixel_values"][:first_tiles] *= 0.5
    after = logits(changed)
    assert not torch.equal(before[first], after[first])  # the change is real
    rest = (pack["sample_ids"][0] > 0) & (pack["attention_mask"][0] == 1)
    assert torch.equal(before[rest], after[rest])


def test_resume_from_a_saved_state_gives_the_same_next_batches(tmp_path, tokenizer, processor):
    urls = write_stage(tmp_path, shards=4, per_shard=6)
    full = _loader(urls, tokenizer, processor, epochs=2, seed=7)
    stream = iter(full)
    for _ in range(5):
        next(stream)
    state = json.loads(json.dumps(full.state_dict()))  # what a checkpoint would keep
    rest = list(stream)
    resumed = _loader(urls, tokenizer, processor, epochs=2, seed=7)
    resumed.load_state_dict(state)
    again = list(resumed)
    assert len(again) == len(rest) > 5
    for a, b in zip(rest, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
        assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_shards_split_between_readers(tmp_path, tokenizer, processor):
    urls = write_stage(tmp_path, shards=4, per_shard=3)
    seen = []
    for rank in range(2):
        loader = _loader(urls, tokenizer, processor, rank=rank, world=2)
        seen.append(sum(p["num_samples"] for p in loader))
        assert len(loader.mine) == 2
    assert seen == [6, 6]


def test_truncated_shard_and_bad_image_are_reported_and_skipped(tmp_path, tokenizer, processor):
    urls = write_stage(tmp_path, shards=2, per_shard=6)
    data = open(urls[1], "rb").read()
    open(urls[1], "wb").write(data[: len(data) // 2])  # a shard cut off mid-file
    with wds.TarWriter(str(tmp_path / "shard-000002.tar")) as tar:
        talk = [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]
        tar.write({"__key__": "000002000000", "jpg": b"not a jpeg",
                   "json": json.dumps({"conversations": talk}).encode()})  # fmt: skip
    messages = []
    loader = StageLoader([*urls, str(tmp_path / "shard-000002.tar")], tokenizer, processor,
                         max_patches=24, max_tokens=160, buffer_size=4,
                         report=messages.append)  # fmt: skip
    samples = sum(p["num_samples"] for p in loader)
    assert 6 <= samples < 12  # the first shard whole, the truncated one up to the cut
    assert loader.skipped["truncated_shard"] == 1 and loader.skipped["bad_image"] == 1
    assert any("shard-000001.tar unreadable" in m for m in messages)
    assert any("shard-000002.tar key 000002000000: bad_image" in m for m in messages)


def test_square_root_averaging_weighs_each_sample_by_its_answer_length(tmp_path, tokenizer,
                                                                       processor):  # fmt: skip
    urls = write_stage(tmp_path, shards=1, per_shard=4)
    pack = next(iter(_loader(urls, tokenizer, processor, loss_reduction="sqrt")))
    weights, labels = pack["loss_weights"][0], pack["labels"][0]
    assert ((weights > 0) == (labels != IGNORE)).all()
    for index in range(pack["num_samples"]):
        mine = (pack["sample_ids"][0] == index) & (labels != IGNORE)
        assert torch.allclose(weights[mine], torch.full_like(weights[mine],
                                                             1 / mine.sum().item() ** 0.5))
    plain = next(iter(_loader(urls, tokenizer, processor)))
    assert torch.equal(plain["loss_weights"][0], (plain["labels"][0] != IGNORE).float())


def test_endless_epochs_of_unreadable_shards_stop_with_an_error(tmp_path, tokenizer, processor):
    loader = _loader([str(tmp_path / "missing.tar")], tokenizer, processor, epochs=None)
    with pytest.raises(RuntimeError, match="no usable sample in a whole epoch"):
        next(iter(loader))


def test_a_multi_image_row_trains_with_each_image_in_its_place(tmp_path, tokenizer, processor):
    """An S2 row with two images (KEY.jpg, KEY.1.jpg, as the stage builder writes them): two image
    spans in `<image>` order, their tiles in the same order, the row's patch budget shared."""
    talk = [{"from": "human", "value": "<image>\nand <image>\nwhich is red?"},
            {"from": "gpt", "value": "the first"}]
    url = str(tmp_path / "shard-000000.tar")
    with wds.TarWriter(url) as tar:
        tar.write({"__key__": "000000000000", "jpg": _jpeg(56, 56, "red"),
                   "1.jpg": _jpeg(112, 56, "blue"),
                   "json": json.dumps({"conversations": talk}).encode()})  # fmt: skip
    pack = next(iter(_loader([url], tokenizer, processor, epochs=1)))
    ids = pack["input_ids"][0].tolist()
    starts = [i for i, t in enumerate(ids) if t == tokenizer.convert_tokens_to_ids("<img>")]
    context = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert len(starts) == 2
    assert ids.count(context) == pack["pixel_values"].shape[0] * processor.tokens_per_tile
    red_first = pack["pixel_values"][0].mean(dim=(1, 2))
    assert red_first[0] > red_first[2]  # the first tile is the red image's
    assert pack["pixel_values"].shape[0] * processor.tokens_per_tile <= 24  # budget shared
    assert _loader([url], tokenizer, processor).skipped == {}
