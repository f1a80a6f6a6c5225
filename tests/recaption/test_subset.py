"""`recaption.samples`: a seeded subset drawn sample by sample, in each shard's settings."""

from __future__ import annotations

import pytest

from pipelines.completion import CompletionLog, settings_hash
from pipelines.outputs import FILTER_UNIT
from recaption.job import caption_settings
from recaption.options import CleaningOptions, RecaptionJobOptions, VllmEngineOptions
from recaption.reading import read_shard
from recaption.subset import CaptionSubset, caption_subset, drawn, filtered_kept
from tests.recaption.conftest import write_shards

IDS = [f"{i:016x}" for i in range(20_000)]


def test_the_draw_is_seeded_nested_and_near_the_cap():
    subset = CaptionSubset(samples=5_000, seed=7, kept=len(IDS))
    taken = {i for i in IDS if subset.takes(i)}
    assert abs(len(taken) - 5_000) < 4 * 5_000**0.5  # Bernoulli(1/4) over 20,000
    assert taken == {i for i in IDS if drawn(7, 0.25, i)}  # the same subset every time
    assert taken != {i for i in IDS if drawn(8, 0.25, i)}  # another seed, another subset
    assert taken < {i for i in IDS if drawn(7, 0.5, i)}  # a larger cap keeps these
    assert all(drawn(7, 1.0, i) for i in IDS[:100])
    assert CaptionSubset(samples=10, seed=0, kept=3).rate == 1.0  # a cap above what is kept
    assert CaptionSubset(samples=10, seed=0, kept=0).rate == 0.0


def test_the_cap_is_drawn_from_every_filtered_source(tmp_path):
    write_shards(tmp_path, [4, 5], source="a")
    write_shards(tmp_path, [3], source="b")
    filtered = tmp_path / "filtered"
    assert filtered_kept(str(filtered / "a")) == 3 + 4  # no filter record: its keep-lists
    settings = {"sources": ["a", "b"]}
    for source, kept in (("a", {"00000": 3, "00001": 4}), ("b", {"00000": 2})):
        CompletionLog(str(filtered / source)).write(FILTER_UNIT, settings,
                                                    {"kept_per_shard": kept})  # fmt: skip
    assert filtered_kept(str(filtered / "a")) == filtered_kept(str(filtered / "b")) == 9
    assert caption_subset(RecaptionJobOptions(), str(filtered / "a")) is None
    subset = caption_subset(RecaptionJobOptions(samples=3, seed=5), str(filtered / "b"))
    assert subset == CaptionSubset(samples=3, seed=5, kept=9)


def test_a_shard_reads_only_its_drawn_samples(tmp_path):
    kept = write_shards(tmp_path, [40])
    unit = {"shard": 0, "tar": str(tmp_path / "raw/00000.tar"),
            "keep_list": str(tmp_path / "filtered/00000.parquet")}  # fmt: skip
    every = read_shard(unit)
    assert [r["key"] for r in every] == kept[0]
    some = read_shard({**unit, "rate": 0.5, "seed": 3})
    assert [r["key"] for r in some] == [r["key"] for r in every if drawn(3, 0.5, r["sample_id"])]
    assert 0 < len(some) < len(every)


def _settings(root, teacher_options, subset=None) -> str:
    return settings_hash(caption_settings(teacher_options, CleaningOptions(), str(root / "raw"),
                                          str(root / "filtered"), "00000", subset))  # fmt: skip


def test_the_cap_and_seed_are_in_each_shards_settings(tmp_path, teacher_options):
    write_shards(tmp_path, [5])
    uncapped = caption_settings(teacher_options, CleaningOptions(), str(tmp_path / "raw"),
                                str(tmp_path / "filtered"), "00000")  # fmt: skip
    assert "subset" not in uncapped  # records made before the cap existed stay valid
    assert set(uncapped["teacher"]) >= {"name", "prompts"}
    assert not {"vllm", "trust_remote_code"} & set(uncapped["teacher"])
    capped = CaptionSubset(samples=2, seed=0, kept=4)
    hashes = {_settings(tmp_path, teacher_options, s)
              for s in (None, capped, CaptionSubset(samples=3, seed=0, kept=4),
                        CaptionSubset(samples=2, seed=1, kept=4),
                        CaptionSubset(samples=2, seed=0, kept=5))}  # fmt: skip
    assert len(hashes) == 5  # the cap, the seed and the population each redo the captions
    # How vLLM lays the teacher out, and remote code, change no caption: nothing redone.
    engine = teacher_options.model_copy(update={
        "vllm": VllmEngineOptions(tensor_parallel_size=2), "trust_remote_code": True})
    assert _settings(tmp_path, engine, capped) == _settings(tmp_path, teacher_options, capped)


def test_a_bad_cap_fails_validation():
    with pytest.raises(ValueError, match="samples"):
        RecaptionJobOptions(samples=0)
