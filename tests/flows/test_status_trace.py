"""`evip status` on a half-finished run and `evip trace` of a repaired, deduplicated sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.cli import main
from flows.config import RunConfig, dump_run_config
from flows.status import chain_upstream, run_status, status_table
from flows.steps import STEPS, run_step
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.download import complete_shards
from pipelines.filter_job import filter_sources
from pipelines.ingest import download_source
from pipelines.layout import RunLayout
from pipelines.synthetic.laion import FabricatedDownloaderWithImages
from pipelines.trace import format_trace, trace_sample
from tests.conftest import FABRICATED_SOURCES

STEP = {s.name: s for s in STEPS}
ROOT = Path(__file__).parents[2]


def _row(rows, step, source):
    return next(r for r in rows if r["step"] == step and r["source"] == source)


def test_status_of_a_config_without_sources(tmp_path):
    rows = run_status(RunConfig(run_root=str(tmp_path / "run")))
    assert [r["step"] for r in rows] == ["stages", "model", "train", "evaluate"]
    assert all(r["complete"] == 0 and r["error"] is None for r in rows)


def test_status_of_the_demo_before_its_first_run_shows_nothing_done(tmp_path, capsys):
    """The demo's source files are the synthetic web's, written by its first `evip ingest`."""
    demo = ["--config", str(ROOT / "configs/demo.yaml"), f"run_root={tmp_path / 'run'}"]
    assert main(["status", *demo]) == 0
    table = capsys.readouterr().out
    assert "| plan | synthetic | 0 / ? | waiting for earlier steps | - |" in table
    assert "| model | (run) | 0 / 2 | not started | - |" in table


def test_a_complete_step_after_one_that_is_not_says_a_rerun_may_redo_it():
    def row(step, source, complete=1, total=1):
        return {"step": step, "source": source, "complete": complete, "total": total,
                "stale": 0, "changed": [], "error": None}  # fmt: skip

    rows = [row("plan", "a"), row("plan", "b"), row("download", "a"),
            row("download", "b", complete=1, total=2), row("filter", "a"), row("filter", "b"),
            row("recaption", "a"), row("stages", "(run)"), row("model", "(run)"),
            row("train", "(run)"), row("evaluate", "(run)")]  # fmt: skip
    rows = chain_upstream(rows, STEP)
    upstream = {(r["step"], r["source"]): r["upstream"] for r in rows}
    assert upstream[("download", "a")] is None and upstream[("model", "(run)")] is None
    # The filter deduplicates across sources: source a's rows wait on b's download too.
    for key in [("filter", "a"), ("recaption", "a"), ("stages", "(run)"), ("train", "(run)"),
                ("evaluate", "(run)")]:  # fmt: skip
        assert upstream[key] == "download", key
    table = status_table(rows)
    assert "| train | (run) | 1 / 1 | complete, but download is not: a rerun may redo it |" in table
    assert "| download | b | 1 / 2 | in progress |" in table


@pytest.mark.slow
def test_status_of_a_half_finished_run(fabricated_run, tmp_path, capsys):
    config = fabricated_run
    layout = RunLayout(config.run_root)
    for source in FABRICATED_SOURCES:  # downloaded, not filtered yet
        CompletionLog(layout.filtered(source)).clear("filter")
    rows = run_status(config)
    download = _row(rows, "download", "laion-a")
    shards = len(complete_shards(layout.raw_folder("laion-a")))
    assert download["complete"] == download["total"] == shards and download["stale"] == 0
    assert _row(rows, "plan", "coyo-c")["complete"] == 2
    assert _row(rows, "recaption", "laion-a")["total"] is None  # not filtered yet

    filter_sources(layout, list(FABRICATED_SOURCES), config.filter)
    CompletionLog(layout.raw("laion-b")).clear("00001")  # a shard lost its record: redone next
    changed = config.model_copy(update={"filter": config.filter.model_copy(
        update={"min_side": 100})})  # fmt: skip
    rows = run_status(changed)
    b_shards = len(complete_shards(layout.raw_folder("laion-b"))) + 1
    assert _row(rows, "download", "laion-b")["complete"] == b_shards - 1
    filtered = _row(rows, "filter", "laion-a")
    assert filtered["stale"] == 1 and "filter.min_side" in filtered["changed"]
    assert _row(rows, "recaption", "laion-a")["complete"] == 0

    broken = changed.model_copy(update={"teacher": changed.teacher.model_copy(
        update={"path": str(tmp_path / "no-teacher")})})  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_step(STEP["recaption"], broken, "laion-a", [])
    table = status_table(run_status(broken))
    assert f"| download | laion-b | {b_shards - 1} / {b_shards} | in progress |" in table
    assert "| filter | laion-a | 0 / 1 | 1 made with other settings (filter.min_side" in table
    line = next(x for x in table.splitlines() if x.startswith("| recaption | laion-a"))
    assert "FileNotFoundError: teacher.path: no checkpoint" in line  # the last error

    path = tmp_path / "run.yaml"
    path.write_text(dump_run_config(broken))
    assert main(["status", "--config", str(path)]) == 0
    assert "| plan | laion-a | 2 / 2 | complete |" in capsys.readouterr().out

    # A rerun redoes exactly the shard that lost its record (and leaves the shared run whole).
    source = next(s for s in config.sources if s.name == "laion-b")
    again = download_source(source, config.download, layout,
                            make_downloader=FabricatedDownloaderWithImages)  # fmt: skip
    assert again["download"] == {"shards": 1, "skipped": b_shards - 2}


@pytest.mark.slow
def test_trace_shows_both_attempts_and_the_kept_copy(fabricated_run, tmp_path, capsys):
    config = fabricated_run
    layout = RunLayout(config.run_root)
    filter_sources(layout, list(FABRICATED_SOURCES), config.filter)
    # A sample repaired in laion-b (first attempt superseded) whose URL laion-a kept first.
    keep = {s: storage.read_parquet(layout.filtered(s)).to_pylist() for s in FABRICATED_SOURCES}
    superseded = {r["sample_id"] for r in keep["laion-b"] if r["reason"] == "superseded_by_repair"}
    wanted = next(r["sample_id"] for r in keep["laion-b"]
                  if r["reason"] == "duplicate_url" and r["sample_id"] in superseded)  # fmt: skip

    trace = trace_sample(layout, list(FABRICATED_SOURCES), config.teacher.name, wanted)
    by_source = {e["source"]: e for e in trace["sources"]}
    attempts = by_source["laion-b"]["attempts"]
    assert [a["verdict"] for a in attempts] == ["superseded_by_repair", "duplicate_url"]
    assert attempts[0]["status"] != "success" and attempts[1]["status"] == "success"
    assert attempts[1]["shard"] > attempts[0]["shard"]  # the repair's shard
    copy = attempts[1]["kept_copy"]
    assert copy["source"] == "laion-a"
    assert [a["verdict"] for a in by_source["laion-a"]["attempts"]][-1] == "kept"
    plan = by_source["laion-b"]["plan"][0]
    assert plan["source_file"].endswith(".parquet") and plan["source_row"] >= 0

    text = format_trace(trace)
    assert "superseded_by_repair" in text and "kept copy instead: laion-a" in text
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["trace", "--config", str(path), plan["url"]]) == 0
    assert capsys.readouterr().out.strip() == text
    assert main(["trace", "--config", str(path), "http://nowhere.test/x.jpg"]) == 1
