"""img2dataset on Ray over the loopback web: every bad kind a counted failure, no good one lost."""

from __future__ import annotations

from collections import Counter

import pytest
import webdataset as wds

from pipelines.download import (
    DownloadOptions,
    done_shards,
    download_table,
    latest_attempts,
    repair,
    shard_metadata,
)
from pipelines.download_report import download_summary, is_retryable
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
def test_download_counts_every_failure_repairs_transient_ones_and_resumes(ray_local, tmp_path):
    options = DownloadOptions(samples_per_shard=16, timeout=1.0, max_in_flight=2)
    raw = tmp_path / "raw"
    with SyntheticWeb(seed=5, slow_seconds=2.5) as web:
        write_source_files(web, SyntheticWebOptions(seed=5, num_images=30), tmp_path / "src")
        table, _ = read_source(SourceOptions(name="synthetic", paths=[str(tmp_path / "src/*")],
                                             keep_columns=GROUND_TRUTH_COLUMNS))  # fmt: skip
        assert download_table(table, raw, options) == {"shards": 3, "skipped": 0}

        first = shard_metadata(raw).to_pylist()
        assert len(first) == table.num_rows  # every input row accounted for, once
        by_kind = Counter((m["gt_kind"], m["status"]) for m in first)
        assert by_kind[("good", "success")] == 26  # 30 good minus 4 metadata rejects: all arrive
        for row in (m for m in first if m["gt_kind"] in BAD_KINDS):
            assert row["status"] != "success", row
            assert EXPECTED_ERRORS[row["gt_kind"]] in row["error_message"], row

        # Repair retries only timeouts and 5xx, in a new shard; flaky URLs now answer.
        assert repair(raw, options, is_retryable) == {"round": 1, "retried": 4, "recovered": 2}
        assert repair(raw, options, is_retryable) == {"round": 2, "retried": 2, "recovered": 0}
        assert download_table(table, raw, options) == {"shards": 0, "skipped": 5}

    assert done_shards(raw) == {0, 1, 2, 3, 4}
    assert not (raw / "_tmp").exists()  # img2dataset's input slices are cleaned up
    latest = latest_attempts(shard_metadata(raw))
    assert latest.num_rows == table.num_rows
    summary = download_summary(latest)
    assert summary["downloaded"] == 28
    assert summary["failures"] == {"timeout": 2, "http_404": 2, "not_an_image": 4,
                                   "too_large": 2, "redirect_loop": 2, "opted_out": 2}  # fmt: skip
    # The tars hold exactly the successes, each once, with the stable sample id alongside.
    tars = [str(p) for p in sorted(raw.glob("*.tar"))]
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    ids = [s["json"]["sample_id"] for s in samples]
    assert len(ids) == len(set(ids)) == 28
