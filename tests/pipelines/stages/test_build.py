"""Stage shards: weights across sources, a deterministic shuffle, plain webdataset (webdataset and
Ray Data both read it), lineage in every sample, no-op rebuilds, a changed spec rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import webdataset as wds

from pipelines.filter_job import filter_sources
from pipelines.layout import RunLayout
from pipelines.stages.build import build_stage
from pipelines.stages.spec import StageSpec
from pipelines.trace import format_trace, trace_sample
from tests.conftest import FABRICATED_SOURCES


def _read(folder: Path) -> list[dict]:
    tars = sorted(str(p) for p in folder.glob("shard-*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False, empty_check=False).decode())


@pytest.mark.slow
def test_stage_shards_mix_shuffle_and_rebuild_only_when_changed(fabricated_run, ray_local):
    config = fabricated_run
    layout = RunLayout(config.run_root)
    filter_sources(layout, list(FABRICATED_SOURCES), config.filter)
    spec = StageSpec(name="S1.1", text="alt_text", samples_per_shard=50, seed=3,
                     sources=[{"name": "laion-a", "weight": 3}, {"name": "laion-b", "weight": 1}])
    manifest = build_stage(layout, spec, list(FABRICATED_SOURCES), "internvl",
                           rows_per_bucket=60)  # fmt: skip
    folder = Path(layout.stages("S1.1"))
    samples = _read(folder)
    assert len(samples) == manifest["samples"] > 100
    assert [s["samples"] for s in manifest["shards"]][:-1] == [50] * (len(manifest["shards"]) - 1)
    share = manifest["per_source"]["laion-a"] / manifest["samples"]
    assert abs(share - 0.75) < 0.08, manifest["per_source"]
    assert "coyo-c" not in manifest["per_source"]
    sources = [s["json"]["source"] for s in samples]
    assert sources[:40].count("laion-b") > 0  # shuffled across sources, not one after the other
    # Every sample names its raw shard and key; its answer is that sample's alt-text.
    first = samples[0]["json"]
    keep = {r["key"]: r for r in layout_rows(layout, first["source"], first["raw_shard"])}
    row = keep[first["raw_key"]]
    assert row["keep"] and row["sample_id"] == first["sample_id"]
    assert first["conversations"][1]["value"].startswith("a photo of thing")
    assert samples[0]["jpg"][:2] == b"\xff\xd8"  # the image, stored once as encoded bytes

    import ray

    rows = ray.data.read_webdataset(str(folder), include_paths=False).take_all()
    assert len(rows) == len(samples)

    # `evip trace` finds the sample in its stage shard.
    trace = trace_sample(layout, list(FABRICATED_SOURCES), "internvl", first["sample_id"])
    held = next(e for e in trace["sources"] if e["source"] == first["source"])["stage_shards"]
    assert [(h["stage"], h["key"]) for h in held] == [("S1.1", samples[0]["__key__"])]
    assert "stage S1.1: shard-000000.tar" in format_trace(trace)

    mtimes = {p.name: os.stat(p).st_mtime_ns for p in folder.glob("*.tar")}
    assert build_stage(layout, spec, list(FABRICATED_SOURCES), "internvl") == manifest
    assert {p.name: os.stat(p).st_mtime_ns for p in folder.glob("*.tar")} == mtimes
    reseeded = build_stage(layout, spec.model_copy(update={"seed": 4}), list(FABRICATED_SOURCES),
                           "internvl", rows_per_bucket=60)  # fmt: skip
    assert reseeded["shards"][0]["sha256"] != manifest["shards"][0]["sha256"]
    assert len(list(folder.glob("*.tar"))) == len(reseeded["shards"])  # nothing of the old spec
    # Built again, the same rows are the same bytes: training, chained to the shards' sha256,
    # is not redone by a rebuild.
    again = build_stage(layout, spec, list(FABRICATED_SOURCES), "internvl", rows_per_bucket=60)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert not (folder / "_shuffle").exists()


def layout_rows(layout, source, shard):
    from pipelines import storage

    return storage.read_parquet(layout.keep_list(source, shard)).to_pylist()
