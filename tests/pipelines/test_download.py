"""img2dataset on Ray over the loopback web: every bad kind a counted failure, no good one lost."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipelines.download import DownloadOptions, done_shards, download_table
from pipelines.sources import SourceOptions, read_source
from pipelines.synthetic.catalog import (
    GROUND_TRUTH_COLUMNS,
    SyntheticWebOptions,
    write_source_files,
)
from pipelines.synthetic.server import BAD_KINDS, SyntheticWeb

EXPECTED_ERRORS = {
    "missing": "404", "slow": "timed out", "html": "decoding", "corrupt": "decoding",
    "oversized": "area too large", "redirect_loop": "302", "noai": "X-Robots-Tag", "flaky": "503",
}  # fmt: skip


@pytest.mark.slow
def test_download_counts_every_failure_and_resumes(ray_local, tmp_path):
    options = DownloadOptions(samples_per_shard=16, timeout=1.0, max_in_flight=2)
    with SyntheticWeb(seed=5, slow_seconds=2.5) as web:
        write_source_files(web, SyntheticWebOptions(seed=5, num_images=30), tmp_path / "src")
        table, _ = read_source(SourceOptions(name="synthetic", paths=[str(tmp_path / "src/*")],
                                             keep_columns=GROUND_TRUTH_COLUMNS))  # fmt: skip
        first = download_table(table, tmp_path / "raw", options)
        again = download_table(table, tmp_path / "raw", options)

    assert first == {"shards": 3, "skipped": 0, "retried": 0}
    assert again == {"shards": 0, "skipped": 3, "retried": 0}
    assert done_shards(tmp_path / "raw") == {0, 1, 2}
    meta = pq.read_table(sorted((tmp_path / "raw").glob("0*.parquet"))).to_pylist()
    assert len(meta) == table.num_rows  # every input row accounted for, once
    by_kind = Counter((m["gt_kind"], m["status"]) for m in meta)
    assert by_kind[("good", "success")] == 26  # 30 good minus 4 metadata rejects: all arrive
    for row in (m for m in meta if m["gt_kind"] in BAD_KINDS):
        assert row["status"] != "success", row
        assert EXPECTED_ERRORS[row["gt_kind"]] in row["error_message"], row
    # The tars hold exactly the successes, with the stable sample id alongside.
    samples = list(wds.WebDataset([str(p) for p in sorted((tmp_path / "raw").glob("*.tar"))],
                                  shardshuffle=False).decode())  # fmt: skip
    assert len(samples) == 26
    ids = [s["json"]["sample_id"] for s in samples]
    assert len(set(ids)) == 26
