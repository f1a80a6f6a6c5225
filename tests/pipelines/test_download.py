"""img2dataset on Ray over the loopback web: every bad kind a counted failure, no good one lost."""

from __future__ import annotations

from collections import Counter

import pyarrow.compute as pc
import pytest
import webdataset as wds

from pipelines.download import DownloadOptions, complete_shards
from pipelines.download_report import download_summary
from pipelines.ingest import download_source
from pipelines.layout import RunLayout
from pipelines.sources import SourceOptions
from pipelines.synthetic.catalog import (
    GROUND_TRUTH_COLUMNS,
    SyntheticWebOptions,
    write_source_files,
)
from pipelines.synthetic.server import BAD_KINDS, SyntheticWeb
from tests.pipelines.helpers import all_attempts, last_attempts

EXPECTED_ERRORS = {
    "missing": "404", "slow": "timed out", "html": "decoding", "corrupt": "decoding",
    "oversized": "area too large", "redirect_loop": "302", "noai": "X-Robots-Tag", "flaky": "503",
}  # fmt: skip


@pytest.mark.slow
def test_download_counts_every_failure_repairs_transient_ones_and_resumes(ray_local, tmp_path):
    options = DownloadOptions(samples_per_shard=16, timeout=1.0, max_in_flight=2, repair_rounds=2)
    layout = RunLayout(tmp_path / "run")
    raw = layout.raw_folder("synthetic")
    source = SourceOptions(name="synthetic", paths=[str(tmp_path / "src/*")],
                           keep_columns=GROUND_TRUTH_COLUMNS)  # fmt: skip
    with SyntheticWeb(seed=5, slow_seconds=2.5) as web:
        write_source_files(web, SyntheticWebOptions(seed=5, num_images=30), tmp_path / "src")
        report = download_source(source, options, layout)
        assert report["planned"] == 42  # 30 good + 16 bad minus 4 metadata rejects
        assert report["download"] == {"shards": 3, "skipped": 0}
        # Repairs retry only timeouts and 5xx, in new shards; flaky URLs now answer.
        assert report["repairs"] == [{"round": 1, "retried": 4, "recovered": 2},
                                     {"round": 2, "retried": 2, "recovered": 0}]  # fmt: skip

        first = all_attempts(raw).filter(pc.less(all_attempts(raw)["shard"], 3)).to_pylist()
        assert len(first) == 42  # every planned row accounted for, once
        by_kind = Counter((m["gt_kind"], m["status"]) for m in first)
        assert by_kind[("good", "success")] == 26  # 30 good minus 4 metadata rejects: all arrive
        for row in (m for m in first if m["gt_kind"] in BAD_KINDS):
            assert row["status"] != "success", row
            assert EXPECTED_ERRORS[row["gt_kind"]] in row["error_message"], row

        again = download_source(source, options, layout)  # a rerun does nothing
        assert again["download"] == {"shards": 0, "skipped": 3}

    assert complete_shards(raw) == [0, 1, 2, 3, 4]
    assert not list((tmp_path / "run/raw/synthetic/_shards").glob("*"))  # slices cleaned up
    latest = last_attempts(all_attempts(raw))
    assert latest.num_rows == 42
    summary = download_summary(latest)
    assert summary["downloaded"] == 28
    assert summary["failures"] == {"timeout": 2, "http_404": 2, "not_an_image": 4,
                                   "too_large": 2, "redirect_loop": 2, "opted_out": 2}  # fmt: skip
    # The tars hold exactly the successes, each once, with the stable sample id alongside.
    tars = [str(p) for p in sorted((tmp_path / "run/raw/synthetic").glob("*.tar"))]
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    ids = [s["json"]["sample_id"] for s in samples]
    assert len(ids) == len(set(ids)) == 28
