"""Download shards are chained to the content of the plan rows they read, not to where the files
sit nor to the rest of the source: a run root copied elsewhere downloads nothing again, an edited
file redoes only its own shards, and a new file downloads only its own."""

from __future__ import annotations

import math
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.completion import CompletionLog
from pipelines.download import DownloadOptions, shard_settings, shard_tasks
from pipelines.ingest import download_source
from pipelines.layout import RunLayout
from pipelines.plan import plan_source
from pipelines.sources import SourceOptions
from pipelines.synthetic.laion import FabricatedDownloader, write_laion_files

OPTIONS = DownloadOptions(samples_per_shard=4, max_in_flight=2, repair_rounds=1)


def _source(root, name="laion-a") -> SourceOptions:
    return SourceOptions(name=name, preset="laion", paths=[str(root / "sources" / "*.parquet")])


def _shard_settings(root) -> list[dict]:
    source = _source(root)
    plan = plan_source(source, RunLayout(root).raw_folder(source.name))
    tasks = shard_tasks(plan["inputs"], 0, OPTIONS.samples_per_shard)
    return [shard_settings(OPTIONS, task, plan["contents"]) for task in tasks]


def test_a_copied_run_root_keeps_its_download_settings_and_an_edited_file_only_its_own(
        ray_local, tmp_path):  # fmt: skip
    first = tmp_path / "first"
    write_laion_files(str(first / "sources"), rows=60, files=2)  # ~10 kept rows each
    settings = _shard_settings(first)
    shutil.copytree(first / "sources", tmp_path / "moved" / "sources")
    assert _shard_settings(tmp_path / "moved") == settings  # planned again, downloads nothing

    path = tmp_path / "moved" / "sources" / "part-00001.parquet"
    table = pq.read_table(path)
    edited = pa.array([text + " edited" for text in table["TEXT"].to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("TEXT"), "TEXT", edited), path)
    after = _shard_settings(tmp_path / "moved")
    of_the_first_file = [s["pieces"][0][0] == settings[0]["pieces"][0][0] for s in settings]
    assert 0 < sum(of_the_first_file) < len(settings)
    assert [a == b for a, b in zip(after, settings)] == of_the_first_file


def test_a_new_source_file_downloads_its_own_shards_only(ray_local, tmp_path):
    root = tmp_path / "run"
    source, layout = _source(tmp_path), RunLayout(root)
    write_laion_files(str(tmp_path / "sources"), rows=120, files=2)
    first = download_source(source, OPTIONS, layout, make_downloader=FabricatedDownloader)
    count = first["download"]["shards"]
    log = CompletionLog(layout.raw(source.name))
    before = {name: log.read(f"{name:05d}") for name in range(count)}

    write_laion_files(str(tmp_path / "more"), rows=60, files=1, seed=1, first_id=1000)
    shutil.copy(tmp_path / "more" / "part-00000.parquet",
                tmp_path / "sources" / "part-00002.parquet")  # appended
    again = download_source(source, OPTIONS, layout, make_downloader=FabricatedDownloader)
    new = math.ceil((again["planned"] - first["planned"]) / OPTIONS.samples_per_shard)
    assert new > 0 and again["download"] == {"shards": new, "skipped": count}
    assert {name: log.read(f"{name:05d}") for name in range(count)} == before  # not rewritten
    # Repair shards are numbered after the first download's, so they moved up: none is left
    # over where the new file's shards now are, nor past the last one.
    shards = sorted(int(name) for name in log.records())
    assert again["repairs"][0]["retried"] > 0 and shards == list(range(len(shards)))
    assert len(shards) > count + new
    still = download_source(source, OPTIONS, layout, make_downloader=FabricatedDownloader)
    assert still["download"] == {"shards": 0, "skipped": count + new}
