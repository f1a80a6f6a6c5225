"""An s3:// run root (moto's S3 server on 127.0.0.1) gives the same keep-lists and captions as a
local one: every step reads and writes through fsspec."""

from __future__ import annotations

import pytest
import s3fs

from flows.config import load_run_config
from flows.steps import run_steps, runnable
from pipelines import storage
from pipelines.layout import RunLayout
from tests.conftest import _free_port

DEMO = "configs/demo.yaml"


def _outputs(config) -> dict:
    layout = RunLayout(config.run_root)
    # img2dataset records a shard's attempts in the order its threads finish: compare by key.
    keep = {url.rsplit("/", 1)[1]: sorted(storage.read_parquet(url).to_pylist(),
                                          key=lambda row: row["key"])
            for url in storage.glob(storage.join(layout.filtered("synthetic"), "*.parquet"))}
    captions = {url.rsplit("/", 1)[1]: storage.read_parquet(url).to_pylist() for url in
                storage.glob(storage.join(layout.captions("internvl", "synthetic"), "*.parquet"))}
    return {"keep": keep, "captions": captions}  # fmt: skip


@pytest.mark.slow
def test_s3_run_root_equals_a_local_run(ray_local, s3_bucket, tmp_path):
    port = _free_port()  # both runs serve the synthetic web on one port: the same URLs
    # Stalls well past the timeout, and a timeout no healthy fetch reaches on a loaded machine:
    # a fetch that times out in one run and not in the other would differ by its reason alone.
    overrides = [f"synthetic_web.port={port}", "synthetic_web.num_images=24",
                 "synthetic_web.slow_seconds=12.0", "download.timeout=6.0",
                 "teacher.tiny.train_steps=5"]  # fmt: skip
    local = load_run_config(DEMO, [f"run_root={tmp_path / 'run'}", *overrides])
    remote = load_run_config(DEMO, [f"run_root={s3_bucket}/run", *overrides])
    steps = runnable("ingest") + runnable("recaption")
    for config in (local, remote):
        run_steps(config, steps)

    expected, got = _outputs(local), _outputs(remote)
    assert expected["keep"] and expected["captions"]
    assert got == expected
    files = s3fs.S3FileSystem().find(f"{s3_bucket}/run")
    assert any(f.endswith("raw/synthetic/00000.tar") for f in files)
    assert any(f.endswith("teacher/_done/tiny-internvl.json") for f in files)
    assert not (tmp_path / "runs").exists()
    # A rerun against the bucket finds every unit complete.
    report = run_steps(remote, runnable("recaption"))["recaption"][0]
    assert report["shards"] == 0 and report["skipped"] == len(got["captions"])
