"""Sources: presets, metadata filters before download, stable ids, clear errors up front."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import (
    PRESETS,
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


RELEASE_SCHEMAS = {
    # The releases' own column names and types (their metadata parquet files).
    "laion400m": pa.schema([("SAMPLE_ID", pa.int64()), ("URL", pa.string()),
                            ("TEXT", pa.string()), ("HEIGHT", pa.int32()),
                            ("WIDTH", pa.int32()), ("LICENSE", pa.string()),
                            ("NSFW", pa.string()), ("similarity", pa.float64())]),
    "laion2b-en-joined": pa.schema([("URL", pa.string()), ("TEXT", pa.string()),
                                    ("WIDTH", pa.float64()), ("HEIGHT", pa.float64()),
                                    ("similarity", pa.float64()), ("hash", pa.int64()),
                                    ("punsafe", pa.float32()), ("pwatermark", pa.float32())]),
    "coyo700m": pa.schema([("id", pa.int64()), ("url", pa.string()), ("text", pa.string()),
                           ("width", pa.int32()), ("height", pa.int32()),
                           ("image_phash", pa.string()), ("text_length", pa.int32()),
                           ("word_count", pa.int32()), ("num_tokens_bert", pa.int32()),
                           ("num_tokens_gpt", pa.int32()), ("num_faces", pa.int32()),
                           ("clip_similarity_vitb32", pa.float32()),
                           ("clip_similarity_vitl14", pa.float32()),
                           ("nsfw_score_opennsfw2", pa.float32()),
                           ("nsfw_score_gantman", pa.float32()),
                           ("watermark_score", pa.float32()),
                           ("aesthetic_score_laion_v2", pa.float32())]),
}  # fmt: skip


def _release_rows(schema: pa.Schema, rows: int = 8) -> pa.Table:
    """Rows in a release's schema: row i is unsafe when i % 4 == 1, low-similarity when 2."""
    columns = {}
    for field in schema:
        name, kind = field.name, field.type
        if name in ("URL", "url"):
            values = [f"http://127.0.0.1:9/{i}.jpg" for i in range(rows)]
        elif name == "NSFW":
            values = ["NSFW" if i % 4 == 1 else ("UNSURE" if i % 4 == 3 else "UNLIKELY")
                      for i in range(rows)]  # fmt: skip
        elif name in ("punsafe", "nsfw_score_opennsfw2"):
            values = [0.9 if i % 4 == 1 else 0.1 for i in range(rows)]
        elif name in ("similarity", "clip_similarity_vitb32"):
            values = [0.1 if i % 4 == 2 else 0.35 for i in range(rows)]
        elif pa.types.is_string(kind):
            values = [f"{name} {i}" for i in range(rows)]
        elif name.lower() in ("width", "height"):
            values = [64 + i for i in range(rows)]
        else:
            values = [i % 3 * 0.1 if pa.types.is_floating(kind) else 64 + i for i in range(rows)]
        columns[name] = pa.array(values, kind)
    return pa.table(columns, schema=schema)


@pytest.mark.parametrize("preset", list(RELEASE_SCHEMAS))
def test_release_presets_read_their_exact_schemas(tmp_path, preset):
    """LAION-400M's string NSFW tag, LAION-2B-en-joined's probabilities, COYO-700M's scores:
    each file validates under its preset and its unsafe and low-similarity rows are dropped."""
    pq.write_table(_release_rows(RELEASE_SCHEMAS[preset]), tmp_path / "part-0.parquet")
    options = SourceOptions(name=preset, preset=preset, paths=[str(tmp_path / "*.parquet")])
    validate_source(options)
    table, dropped = read_source(options)
    reason = "unsafe_tag" if preset == "laion400m" else "unsafe"
    assert dropped == {reason: 2, "low_similarity": 2}
    assert table.num_rows == 4 and table["width"].type == pa.int64()


def test_a_laion400m_file_under_the_punsafe_preset_is_refused_naming_the_columns(tmp_path):
    pq.write_table(_release_rows(RELEASE_SCHEMAS["laion400m"]), tmp_path / "part-0.parquet")
    options = SourceOptions(name="l", preset="laion", paths=[str(tmp_path / "*.parquet")])
    with pytest.raises(SourceError, match=r"lacks columns \['punsafe', 'pwatermark'\]"):
        validate_source(options)
    unsure = SourceOptions(name="l", preset="laion400m", drop_tags=["NSFW", "UNSURE"],
                           paths=[str(tmp_path / "*.parquet")])  # fmt: skip
    assert read_source(unsure)[1]["unsafe_tag"] == 4


def test_the_laion_and_coyo_names_keep_their_columns():
    """Configs written before the release presets (the demo's among them) read as they did."""
    assert PRESETS["laion"].model_dump(exclude_none=True) == {
        "url": "URL", "caption": "TEXT", "width": "WIDTH", "height": "HEIGHT",
        "similarity": "similarity", "unsafe": "punsafe", "watermark": "pwatermark",
        "optional": []}  # fmt: skip
    assert PRESETS["coyo"] == PRESETS["coyo700m"]
