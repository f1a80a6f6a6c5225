"""The Ray Data recaption job: every kept sample exactly one caption, reruns skip, crashes redo."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from recaption.job import RecaptionJob
from recaption.options import CleaningOptions, RecaptionJobOptions
from tests.recaption.conftest import write_shards


def _captions(folder):
    return {int(p.stem): pq.read_table(p).to_pylist() for p in sorted(folder.glob("*.parquet"))}


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
    metadata = pq.read_schema(out / "00000.parquet").metadata[b"evip.recaption"]
    assert b"max_new_tokens" in metadata

    # A rerun does nothing; a shard whose file is missing (the job died before its rename,
    # leaving a temporary file) is redone alone, with the same rows.
    assert job.run(tmp_path / "raw", tmp_path / "filtered", out)["shards"] == 0
    before = {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in (0, 1, 2)}
    (out / "00003.parquet").rename(out / "00003.parquet.tmp")
    again = job.run(tmp_path / "raw", tmp_path / "filtered", out)
    assert again["shards"] == 1 and again["skipped"] == 3
    assert [r["key"] for r in _captions(out)[3]] == sorted(kept[3])
    assert {s: os.stat(out / f"{s:05d}.parquet").st_mtime_ns for s in (0, 1, 2)} == before
