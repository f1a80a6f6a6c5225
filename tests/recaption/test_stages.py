"""Stages over batches: a bad image or a failing generation costs one sample, not the batch."""

from __future__ import annotations

import numpy as np

from recaption.options import CleaningOptions
from recaption.reading import read_shard
from recaption.stages import Caption, Preprocess
from tests.recaption.conftest import write_shards


def _batch(rows):
    return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


def test_bad_image_and_failing_generation_drop_only_their_sample(
    tmp_path, teacher_dir, teacher_options
):
    kept = write_shards(tmp_path, [6], bad={"000000002"})
    rows = read_shard(
        {
            "shard": 0,
            "tar": str(tmp_path / "raw/00000.tar"),
            "keep_list": str(tmp_path / "filtered/00000.parquet"),
        }
    )
    assert [r["key"] for r in rows] == kept[0]

    prepared = Preprocess(str(teacher_dir), teacher_options)(_batch(rows))
    assert prepared["error"][1].startswith("bad_image")  # key ...2 is the second kept sample
    assert sum(bool(e) for e in prepared["error"]) == 1
    # Break one good sample's tiles so generation raises for it alone.
    prepared["pixel_values"][3] = np.zeros((1, 3, 5, 5), np.float16)

    out = Caption(str(teacher_dir), teacher_options, CleaningOptions(min_words=1))(prepared)
    assert out["reason"][1] == "bad_image" and out["reason"][3] == "generation_error"
    assert out["fallback"][1] and out["fallback"][3]
    assert out["caption"][1] == f"alt text {kept[0][1]}"  # alt-text kept, flagged
    others = [i for i in range(5) if i not in (1, 3)]
    assert all(out["raw_caption"][i] is not None for i in others)
    assert all(out["reason"][i] in (None, "empty", "repetition") for i in others)
