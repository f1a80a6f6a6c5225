"""The Ray Data recaption job: every kept sample exactly one caption, reruns skip, crashes redo
(a shard whose file was written but not its record: what a job killed between the two leaves)."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from pipelines.completion import CompletionLog, settings_hash
from recaption.job import RecaptionJob, caption_settings
from recaption.options import CleaningOptions, RecaptionJobOptions
from tests.recaption.conftest import write_shards


def _captions(folder):
    files = sorted(folder.glob("[0-9]*.parquet"))
    return {int(p.stem): pq.read_table(p).to_pylist() for p in files}


@pytest.mark.slow
def test_job_captions_each_kept_sample_once_and_resumes(
    ray_local, tmp_path, teacher_dir, teacher_options
):
    kept = write_shards(tmp_path, [7, 5, 1, 6], bad={"000010003"})  # shard 2 keeps nothing
    filtered = CompletionLog(str(tmp_path / "filtered"))
    filtered.write("filter", {"inputs": ["00000", "00001", "00002", "00003"]}, {})
    job = RecaptionJob(
        str(teacher_dir),
        teacher_options,
        CleaningOptions(),
        RecaptionJobOptions(batch_size=4, preprocess_batch_size=3),
    )
    out = tmp_path / "captions"
    report = job.run(tmp_path / "raw", tmp_path / "filtered", out)
    assert report["shards"] == 4 and report["skipped"] == 0
    assert report["images"] == sum(len(k) for k in kept.values()) == 15

    captions = _captions(out)
    assert captions.keys() == kept.keys()
    for shard, keys in kept.items():
        assert [r["key"] for r in captions[shard]] == sorted(keys)  # each exactly once
    bad = [r for r in captions[1] if r["key"] == "000010003"]
    assert bad[0]["reason"] == "bad_image" and bad[0]["fallback"]
    assert bad[0]["caption"] == "alt text 000010003"
    record = CompletionLog(str(out)).read("00000")
    assert record["settings"]["teacher"]["generation"]["max_new_tokens"] == 8
    assert record["covered"]["captions"] == len(kept[0])

    # A rerun does nothing; a shard without its record (the job died between its file and its
    # record) is redone alone, with the same rows.
    assert job.run(tmp_path / "raw", tmp_path / "filtered", out)["shards"] == 0
    before = {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in (0, 1, 2)}
    CompletionLog(str(out)).clear("00003")
    again = job.run(tmp_path / "raw", tmp_path / "filtered", out)
    assert again["shards"] == 1 and again["skipped"] == 3
    assert [r["key"] for r in _captions(out)[3]] == sorted(kept[3])
    assert {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in (0, 1, 2)} == before

    # One more download shard (a new filter record, which covers every shard): captioned alone.
    before = {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in range(4)}
    kept = write_shards(tmp_path, [7, 5, 1, 6, 3], bad={"000010003"})
    filtered.write("filter", {"inputs": ["00000", "00001", "00002", "00003", "00004"]}, {})
    report = job.run(tmp_path / "raw", tmp_path / "filtered", out)
    assert report["shards"] == 1 and report["skipped"] == 4 and report["stale"] == 0
    assert [r["key"] for r in _captions(out)[4]] == kept[4]
    assert {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in range(4)} == before


@pytest.mark.slow
def test_another_prompt_redoes_every_shard_and_never_mixes(
    ray_local, tmp_path, teacher_dir, teacher_options, capsys
):
    kept = write_shards(tmp_path, [3, 4])
    out = tmp_path / "captions"
    options = RecaptionJobOptions(batch_size=4, preprocess_batch_size=4)
    first = RecaptionJob(str(teacher_dir), teacher_options, CleaningOptions(), options)
    assert first.run(tmp_path / "raw", tmp_path / "filtered", out)["shards"] == 2
    old = {r["prompt"] for rows in _captions(out).values() for r in rows}

    prompts = ["Caption this picture in a few words."]
    other = teacher_options.model_copy(update={"prompts": prompts})
    second = RecaptionJob(str(teacher_dir), other, CleaningOptions(), options)
    report = second.run(tmp_path / "raw", tmp_path / "filtered", out)
    assert report["shards"] == 2 and report["stale"] == 2 and report["skipped"] == 0
    assert "redoing 2 made with other settings (teacher.prompts)" in capsys.readouterr().out
    captions = _captions(out)
    assert {s: [r["key"] for r in rows] for s, rows in captions.items()} == {
        s: sorted(keys) for s, keys in kept.items()}  # fmt: skip
    assert {r["prompt"] for rows in captions.values() for r in rows} == set(prompts) != old
    records = CompletionLog(str(out)).records()
    assert {r["settings"]["teacher"]["prompts"][0] for r in records.values()} == set(prompts)
    # The first settings again: the second's captions are replaced, never kept beside them.
    assert first.run(tmp_path / "raw", tmp_path / "filtered", out)["stale"] == 2


def _shard_settings(root, teacher_options, shards=(0, 1)) -> dict[int, str]:
    return {s: settings_hash(caption_settings(teacher_options, CleaningOptions(), root / "raw",
                                              root / "filtered", f"{s:05d}"))
            for s in shards}  # fmt: skip


def test_a_caption_shard_depends_on_its_own_keep_list_and_download_only(tmp_path,
                                                                        teacher_options):
    """Not on the filter record, which covers every shard of every source: one more source or
    download shard (a new filter record) must not redo the captions of the others."""
    write_shards(tmp_path, [3, 4])
    filtered, raw = CompletionLog(str(tmp_path / "filtered")), CompletionLog(str(tmp_path / "raw"))
    filtered.write("filter", {"sources": ["a"]}, {"kept_per_shard": {"00000": 2, "00001": 3}})
    for unit in ("00000", "00001"):
        raw.write(unit, {"download": "first"})
    before = _shard_settings(tmp_path, teacher_options)

    write_shards(tmp_path, [3, 4, 5])  # one more shard, a filter over one more source
    filtered.write("filter", {"sources": ["a", "b"]}, {"kept_per_shard": {"00000": 2}})
    assert _shard_settings(tmp_path, teacher_options) == before

    write_shards(tmp_path, [3, 4], dropped=2)  # shard 1's keep-list keeps one sample fewer
    after = _shard_settings(tmp_path, teacher_options)
    assert after[0] != before[0] and after[1] != before[1]  # both lost their first kept sample
    raw.write("00001", {"download": "again"})  # shard 1 downloaded again
    again = _shard_settings(tmp_path, teacher_options)
    assert again[0] == after[0] and again[1] != after[1]


@pytest.mark.slow
def test_a_capped_recaption_captions_its_seeded_subset_and_resumes(
    ray_local, tmp_path, teacher_dir, teacher_options, capsys
):
    from recaption.subset import drawn

    write_shards(tmp_path, [9, 8, 2])  # 8 + 7 + 1 kept
    out, options = tmp_path / "captions", RecaptionJobOptions(batch_size=4, preprocess_batch_size=4,
                                                              samples=8, seed=1)  # fmt: skip
    job = RecaptionJob(str(teacher_dir), teacher_options, CleaningOptions(), options)
    report = job.run(tmp_path / "raw", tmp_path / "filtered", out)

    def subset(seed):  # the kept samples whose draw falls under 8 / 16
        rows = [r for s in range(3) for r in pq.read_table(tmp_path / f"filtered/{s:05d}.parquet")
                .to_pylist() if r["keep"]]  # fmt: skip
        return sorted(r["key"] for r in rows if drawn(seed, 8 / 16, r["sample_id"]))

    captioned = sorted(r["key"] for rows in _captions(out).values() for r in rows)
    assert captioned == subset(1) and 0 < len(captioned) < 16 and report["images"] == len(captioned)
    assert set(_captions(out)) == {0, 1, 2}  # a shard with none drawn is recorded all the same
    record = CompletionLog(str(out)).read("00001")
    assert record["settings"]["subset"] == {"samples": 8, "seed": 1, "kept": 16}

    assert job.run(tmp_path / "raw", tmp_path / "filtered", out)["shards"] == 0  # resumable
    reseeded = RecaptionJob(str(teacher_dir), teacher_options, CleaningOptions(),
                            options.model_copy(update={"seed": 2}))  # fmt: skip
    assert reseeded.run(tmp_path / "raw", tmp_path / "filtered", out)["stale"] == 3
    assert "(subset.seed)" in capsys.readouterr().out
    assert sorted(r["key"] for rows in _captions(out).values() for r in rows) == subset(2)
