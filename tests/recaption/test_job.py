"""The Ray Data recaption job: every kept sample exactly one caption, reruns skip, crashes redo."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from pipelines.completion import CompletionLog
from recaption.job import RecaptionJob
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
