"""Sources: presets, metadata filters before download, stable ids, clear errors up front."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import (
    ColumnMapping,
    SourceError,
    SourceOptions,
    read_source_file,
    sample_id,
    source_files,
    validate_source,
)
from pipelines.synthetic.catalog import (
    GROUND_TRUTH_COLUMNS,
    SyntheticWebOptions,
    write_source_files,
)
from pipelines.synthetic.server import BAD_KINDS, SyntheticWeb


def read_source(options: SourceOptions):
    """Every file of a source planned in turn (as the plan step's Ray tasks do)."""
    tables, dropped = [], Counter()
    for path in source_files(options):
        table, file_dropped = read_source_file(options, path)
        tables.append(table)
        dropped.update(file_dropped)
    return pa.concat_tables(tables), {k: v for k, v in dropped.items() if v}


@pytest.fixture(scope="module")
def web():
    with SyntheticWeb() as served:
        yield served


@pytest.mark.parametrize("preset", ["laion", "coyo"])
def test_presets_read_the_synthetic_sources(web, tmp_path, preset):
    options = SyntheticWebOptions(preset=preset, num_images=30, rows_per_file=20)
    paths = write_source_files(web, options, tmp_path)
    assert len(paths) == 3  # 30 good + 16 bad rows, 20 per file
    table, dropped = read_source(SourceOptions(
        name="s", paths=[str(tmp_path / "*.parquet")], preset=preset,
        keep_columns=GROUND_TRUTH_COLUMNS))  # fmt: skip
    assert dropped == {"low_similarity": 2, "unsafe": 1, "watermark": 1}
    assert table.num_rows == 30 + 2 * len(BAD_KINDS) - 4
    assert "metadata_reject" not in table["gt_kind"].to_pylist()
    ids = table["sample_id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert ids[0] == sample_id(table["url"][0].as_py())
    # Lineage: every plan row names its source file and row there.
    first = table.slice(0, 1).to_pylist()[0]
    assert first["source"] == "s" and first["source_file"].endswith("part-00000.parquet")
    raw = pq.read_table(first["source_file"]).to_pylist()[first["source_row"]]
    assert raw[{"laion": "URL", "coyo": "url"}[preset]] == first["url"]


def test_custom_mapping(tmp_path):
    pq.write_table(pa.table({"link": ["http://127.0.0.1/a.jpg"], "alt": ["a cat"]}),
                   tmp_path / "x.parquet")  # fmt: skip
    options = SourceOptions(name="x", paths=[str(tmp_path / "x.parquet")], preset="custom",
                            columns=ColumnMapping(url="link", caption="alt"))  # fmt: skip
    table, dropped = read_source(options)
    assert table["caption"].to_pylist() == ["a cat"] and dropped == {}
    with pytest.raises(ValueError, match="custom"):
        SourceOptions(name="x", paths=["a"], preset="custom")


def test_malformed_sources_fail_before_any_work(tmp_path):
    pq.write_table(
        pa.table({"TEXT": ["a"], "WIDTH": [1], "HEIGHT": [1]}), tmp_path / "nourl.parquet"
    )
    pq.write_table(pa.table({"URL": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    (tmp_path / "notparquet.parquet").write_text("url,caption\nhttp://x,y\n")
    cases = {
        "nourl.parquet": "lacks columns \\['URL'",
        "empty.parquet": "is empty",
        "notparquet.parquet": "not a parquet file",
        "absent.parquet": "does not exist",
    }
    for name, message in cases.items():
        options = SourceOptions(name="bad", paths=[str(tmp_path / name)], min_similarity=None,
                                max_unsafe=None, max_watermark=None)  # fmt: skip
        with pytest.raises(SourceError, match=message):
            validate_source(options)
    with pytest.raises(SourceError, match="no file matches"):
        validate_source(SourceOptions(name="bad", paths=[str(tmp_path / "none-*.parquet")]))
