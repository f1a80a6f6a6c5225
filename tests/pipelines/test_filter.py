"""Filters: every drop has its reason, duplicates go across shards, the first one stays."""

from __future__ import annotations

import pyarrow as pa

from pipelines.filter import (
    FilterOptions,
    filter_table,
    mark_duplicates,
    summarize,
    summary_table,
    verdicts,
)


def _shard(rows):
    defaults = dict(status="success", caption="a red circle", original_width=300,
                    original_height=200, sha256=None, url=None, sample_id=None,
                    error_message=None)  # fmt: skip
    full = []
    for i, row in enumerate(rows):
        merged = {**defaults, **row}
        merged.setdefault("key", f"{i:09d}")
        merged["sha256"] = merged["sha256"] or f"hash-{merged['key']}"
        merged["url"] = merged["url"] or f"http://127.0.0.1/{merged['key']}.jpg"
        full.append(merged)
    return pa.Table.from_pylist(full)


def test_each_filter_records_its_reason():
    shard = _shard([
        {}, {"status": "failed_to_download", "error_message": "HTTP Error 404: Not Found"},
        {"original_width": 20}, {"original_height": 2000},
        {"caption": "   "}, {"caption": "cat"}, {"caption": "word " * 200},
    ])  # fmt: skip
    keep_list = filter_table(shard, FilterOptions().build())
    assert keep_list["keep"].to_pylist() == [True] + [False] * 6
    assert keep_list["reason"].to_pylist() == [
        None, "download_http_404", "too_small", "extreme_aspect", "empty_caption",
        "short_caption", "long_caption",
    ]  # fmt: skip
    assert keep_list["key"].to_pylist() == shard["key"].to_pylist()


def test_duplicates_across_shards_keep_the_first():
    first = _shard([{"key": "a", "sha256": "h1"}, {"key": "b", "sha256": "h1"},
                    {"key": "c", "url": "http://x/1.jpg"}])  # fmt: skip
    second = _shard([{"key": "d", "sha256": "h1"}, {"key": "e", "url": "http://x/1.jpg"},
                     {"key": "f", "sha256": "h2", "status": "failed_to_resize",
                      "error_message": "Image decoding error"}])  # fmt: skip
    filters = FilterOptions().build()
    lists = mark_duplicates([(s, filter_table(s, filters)) for s in (first, second)])
    reasons = [r for t in lists for r in t["reason"].to_pylist()]
    assert reasons == [None, "duplicate_image", None, "duplicate_image", "duplicate_url",
                       "download_not_an_image"]  # fmt: skip
    assert summarize(lists) == {"total": 6, "kept": 2, "duplicate_image": 2, "duplicate_url": 1,
                                "download_not_an_image": 1}  # fmt: skip
    table = summary_table(summarize(lists))
    assert "| kept | 2 | 33.3% |" in table and "| dropped: duplicate_image | 2 | 33.3% |" in table


def test_vectorised_reasons_equal_the_per_sample_rule():
    shard = _shard([
        {}, {"status": "failed_to_download", "error_message": "HTTP Error 503"},
        {"status": "failed_to_download", "error_message": None}, {"original_width": None},
        {"original_width": 0}, {"original_width": 63},
        {"original_height": 257, "original_width": 64}, {"caption": None},
        {"caption": " two  words "}, {"caption": "one\t"}, {"caption": "x" * 513},
        {"caption": "a b " + "x" * 508},
    ])  # fmt: skip
    filters = FilterOptions().build()
    expected = filter_table(shard, filters)["reason"].to_pylist()
    assert verdicts(shard, filters).to_pylist() == expected
    assert expected[:3] == [None, "download_http_5xx", "download_other"]


def test_the_filters_cpus_are_scheduling_not_settings(tmp_path):
    from pipelines.filter import FilterOptions
    from pipelines.filter_job import filter_settings
    from pipelines.layout import RunLayout

    run = RunLayout(tmp_path / "run")
    wanted = filter_settings(run, ["a"], FilterOptions())
    assert filter_settings(run, ["a"], FilterOptions(cpus_per_task=2.0)) == wanted
    assert filter_settings(run, ["a"], FilterOptions(min_side=10)) != wanted
