"""A killed ingest resumes: finished shards are skipped, no sample twice, none missing."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds
import yaml

from pipelines.download import complete_shards
from pipelines.layout import RawFolder
from pipelines.sources import SourceOptions, read_source_file, source_files
from pipelines.synthetic.catalog import (
    GROUND_TRUTH_COLUMNS,
    SyntheticWebOptions,
    write_source_files,
)
from pipelines.synthetic.server import SyntheticWeb
from tests.pipelines.helpers import all_attempts
from tests.pipelines.test_sources import read_source

ROOT = Path(__file__).parents[2]


def _ingest(config_path: Path, **popen):
    command = [sys.executable, "-m", "flows.cli", "ingest", "--config", str(config_path)]
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True, **popen)


@pytest.mark.slow
def test_sigkilled_ingest_resumes_exactly_once(tmp_path):
    per_shard = 16
    with SyntheticWeb(seed=11, slow_seconds=1.0) as web:
        write_source_files(web, SyntheticWebOptions(seed=11, num_images=96, bad_per_kind=4),
                           tmp_path / "src")  # fmt: skip
        source = {"name": "web", "paths": [str(tmp_path / "src" / "*.parquet")],
                  "keep_columns": GROUND_TRUTH_COLUMNS}  # fmt: skip
        table, _ = read_source(SourceOptions(**source))
        config = {
            "run_root": str(tmp_path / "run"), "ray": {"num_cpus": 2}, "sources": [source],
            "download": {"samples_per_shard": per_shard, "timeout": 0.5, "max_in_flight": 1,
                         "thread_count": 8, "repair_rounds": 0},
        }  # fmt: skip
        config_path = tmp_path / "run.yaml"
        config_path.write_text(yaml.safe_dump(config))
        raw = tmp_path / "run" / "raw" / "web"
        folder = RawFolder(str(raw))

        def done_shards():
            return set(complete_shards(folder)) if (raw / "_done").exists() else set()

        options = SourceOptions(**source)  # each source file starts a new shard
        total = sum(math.ceil(read_source_file(options, path)[0].num_rows / per_shard)
                    for path in source_files(options))  # fmt: skip

        log = (tmp_path / "first.log").open("w")
        first = _ingest(config_path, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while len(done_shards()) < 2 and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        finished_before = done_shards()
        assert 2 <= len(finished_before) < total, (tmp_path / "first.log").read_text()[-2000:]
        mtimes = {s: (raw / f"{s:05d}.tar").stat().st_mtime_ns for s in finished_before}

        second = _ingest(config_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = second.communicate(timeout=300)
        assert second.returncode == 0, output[-3000:]

    assert done_shards() == set(range(total))
    # Finished shards were not redone.
    assert all((raw / f"{s:05d}.tar").stat().st_mtime_ns == t for s, t in mtimes.items())
    metadata = all_attempts(folder)
    ids = metadata["sample_id"].to_pylist()
    assert len(ids) == len(set(ids)) == table.num_rows  # nothing twice, nothing missing
    assert set(ids) == set(table["sample_id"].to_pylist())
    successes = sum(s == "success" for s in metadata["status"].to_pylist())
    tars = [str(p) for p in sorted(raw.glob("[0-9]*.tar"))]
    in_tars = [s["json"]["sample_id"] for s in wds.WebDataset(tars, shardshuffle=False).decode()]
    assert len(in_tars) == len(set(in_tars)) == successes == 92  # 96 good minus 4 rejected
    filtered = tmp_path / "run" / "filtered" / "web"
    assert sorted(p.stem for p in filtered.glob("[0-9]*.parquet")) == [f"{s:05d}" for s in
                                                                       range(total)]  # fmt: skip
