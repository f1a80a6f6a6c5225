"""SIGKILL the recaption job mid-run, rerun: every kept key has exactly one caption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.recaption.conftest import write_shards

ROOT = Path(__file__).parents[2]


def _recaption(config: Path, **popen):
    command = [sys.executable, "-m", "flows.cli", "recaption", "--config", str(config)]
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True, **popen)


@pytest.mark.slow
def test_sigkilled_recaption_reruns_exactly_once(tmp_path, teacher_dir):
    run = tmp_path / "run"
    kept = write_shards(run, [9] * 5, source="web")
    config = {
        "run_root": str(run), "ray": {"num_cpus": 2},
        "sources": [{"name": "web", "paths": [str(tmp_path / "unused.parquet")]}],
        "teacher": {"name": "tiny", "path": str(teacher_dir), "max_tiles": 2,
                    "generation": {"max_new_tokens": 8}},
        "recaption": {"batch_size": 2, "preprocess_batch_size": 2},
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run / "captions" / "tiny" / "web"

    log = (tmp_path / "first.log").open("w")
    first = _recaption(path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    records = out / "_done"
    while time.time() < deadline and first.poll() is None and len(list(records.glob("*.json"))) < 1:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # A shard counts once its record is written (after its file); a file without one is redone.
    done_before = {f"{p.stem}.parquet": (out / f"{p.stem}.parquet").stat().st_mtime_ns
                   for p in records.glob("*.json")}  # fmt: skip
    assert 1 <= len(done_before) < 5, (tmp_path / "first.log").read_text()[-3000:]

    second = _recaption(path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = second.communicate(timeout=400)
    assert second.returncode == 0, output[-3000:]
    assert f"| shards already done | {len(done_before)} |" in output

    captions = {int(p.stem): [r["key"] for r in pq.read_table(p).to_pylist()]
                for p in out.glob("*.parquet")}  # fmt: skip
    assert captions == {shard: sorted(keys) for shard, keys in kept.items()}
    assert all((out / name).stat().st_mtime_ns == t for name, t in done_before.items())
