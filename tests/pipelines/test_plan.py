"""A plan is identified to downloads by its rows' content, not by where its files sit: a run root
copied elsewhere (or a source moved) plans again but downloads nothing again."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.download import DownloadOptions, download_settings
from pipelines.layout import RunLayout
from pipelines.plan import plan_source
from pipelines.sources import SourceOptions
from pipelines.synthetic.laion import write_laion_files


def _plan(root, name="laion-a"):
    source = SourceOptions(name=name, preset="laion", paths=[str(root / "sources" / "*.parquet")])
    return plan_source(source, RunLayout(root).raw_folder(name))


def test_a_copied_run_root_keeps_its_download_settings_and_a_changed_row_does_not(
        ray_local, tmp_path):  # fmt: skip
    first = tmp_path / "first"
    write_laion_files(str(first / "sources"), rows=60, files=2)
    planned = _plan(first)
    shutil.copytree(first / "sources", tmp_path / "moved" / "sources")
    moved = _plan(tmp_path / "moved")
    assert moved["inputs"][0][0] != planned["inputs"][0][0]  # planned again, in its own root
    options = DownloadOptions()
    assert download_settings(options, moved["id"]) == download_settings(options, planned["id"])

    path = tmp_path / "moved" / "sources" / "part-00001.parquet"
    table = pq.read_table(path)
    edited = pa.array([text + " edited" for text in table["TEXT"].to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("TEXT"), "TEXT", edited), path)
    assert _plan(tmp_path / "moved")["id"] != planned["id"]
