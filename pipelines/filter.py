"""Per-sample filters over downloaded shards, with the reason recorded; tars are never rewritten.

Each filter is a tiny class with one method, `reason(sample) -> str | None` (None keeps the
sample), in the spirit of datatrove's filters; the built-in ones also answer for a whole table at
once (`reasons`, pyarrow compute), which is what the filter job runs. `filter_table` runs a list
of them over one img2dataset shard's metadata table (every row, successes and failures);
`mark_duplicates` is the single-process reference of the distributed dedup (`pipelines/dedup.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from model.options import FrozenOptions
from pipelines import markdown
from pipelines.download_report import failure_reason
from pipelines.schema import KEEP_LIST

KEEP_LIST_SCHEMA = KEEP_LIST


class SampleFilter:
    """One check over one sample (a dict of the shard's metadata columns)."""

    def reason(self, sample: dict) -> str | None:
        raise NotImplementedError

    def reasons(self, table: pa.Table) -> pa.Array:
        """`reason` of every row (null: passes); filters override it with vectorised code."""
        return pa.array([self.reason(s) for s in table.to_pylist()], pa.string())


def _where(condition, reason: str, otherwise=None) -> pa.Array:
    fallback = otherwise if otherwise is not None else pa.scalar(None, pa.string())
    return pc.if_else(pc.fill_null(condition, False), pa.scalar(reason), fallback)


def _sides(table: pa.Table):
    width = pc.fill_null(table["original_width"].cast(pa.int64()), 0)
    return width, pc.fill_null(table["original_height"].cast(pa.int64()), 0)


class DownloadedFilter(SampleFilter):
    """Samples img2dataset could not fetch or decode, with why (`download_http_404`, ...)."""

    def reason(self, sample):
        if sample.get("status") == "success":
            return None
        return f"download_{failure_reason(sample.get('error_message'))}"

    def reasons(self, table):
        failed = pc.fill_null(pc.not_equal(table["status"], "success"), True)
        messages = table["error_message"].to_pylist()
        flags = failed.to_pylist()
        return pa.array([f"download_{failure_reason(m)}" if f else None
                         for f, m in zip(flags, messages)], pa.string())  # fmt: skip


class MinSideFilter(SampleFilter):
    def __init__(self, min_side: int):
        self.min_side = min_side

    def reason(self, sample):
        sides = (sample.get("original_width") or 0, sample.get("original_height") or 0)
        return "too_small" if min(sides) < self.min_side else None

    def reasons(self, table):
        width, height = _sides(table)
        return _where(pc.less(pc.min_element_wise(width, height), self.min_side), "too_small")


class AspectRatioFilter(SampleFilter):
    def __init__(self, max_ratio: float):
        self.max_ratio = max_ratio

    def reason(self, sample):
        w, h = sample.get("original_width") or 0, sample.get("original_height") or 0
        if min(w, h) <= 0:
            return "no_size"
        return "extreme_aspect" if max(w, h) / min(w, h) > self.max_ratio else None

    def reasons(self, table):
        width, height = _sides(table)
        short, long = pc.min_element_wise(width, height), pc.max_element_wise(width, height)
        ratio = pc.divide(long.cast(pa.float64()), pc.max_element_wise(short, 1).cast(pa.float64()))
        extreme = _where(pc.greater(ratio, self.max_ratio), "extreme_aspect")
        return _where(pc.less_equal(short, 0), "no_size", extreme)


class CaptionFilter(SampleFilter):
    def __init__(self, min_words: int, max_chars: int):
        self.min_words, self.max_chars = min_words, max_chars

    def reason(self, sample):
        caption = (sample.get("caption") or "").strip()
        if not caption:
            return "empty_caption"
        if len(caption.split()) < self.min_words:
            return "short_caption"
        return "long_caption" if len(caption) > self.max_chars else None

    def reasons(self, table):
        caption = pc.utf8_trim_whitespace(pc.fill_null(table["caption"].cast(pa.string()), ""))
        words = pc.list_value_length(pc.utf8_split_whitespace(caption))
        long = _where(pc.greater(pc.utf8_length(caption), self.max_chars), "long_caption")
        short = _where(pc.less(words, self.min_words), "short_caption", long)
        return _where(pc.equal(pc.utf8_length(caption), 0), "empty_caption", short)


class FilterOptions(FrozenOptions):
    """What a sample must satisfy to be kept."""

    min_side: int = 64
    """Smallest allowed original width or height, in pixels."""
    max_aspect_ratio: float = 4.0
    """Largest allowed long side / short side."""
    min_caption_words: int = 2
    """Fewest words an alt-text may have."""
    max_caption_chars: int = 512
    """Longest alt-text allowed."""
    dedup_images: bool = True
    """Drop exact duplicate images (same sha256), keeping the first."""
    dedup_urls: bool = True
    """Drop repeated URLs, keeping the first."""
    cpus_per_task: float = Field(0.5, gt=0)
    """CPUs each of the filter's Ray tasks reserves (map, the two dedup reduces, assemble);
    scheduling only: it changes no keep-list."""

    def build(self) -> list[SampleFilter]:
        return [
            DownloadedFilter(),
            MinSideFilter(self.min_side),
            AspectRatioFilter(self.max_aspect_ratio),
            CaptionFilter(self.min_caption_words, self.max_caption_chars),
        ]


def verdicts(table: pa.Table, filters: Sequence[SampleFilter]) -> pa.Array:
    """The first failing filter's reason for every row (null: kept), vectorised."""
    if table.num_rows == 0:
        return pa.array([], pa.string())
    return pc.coalesce(*[f.reasons(table) for f in filters])


def filter_table(table: pa.Table, filters: Sequence[SampleFilter]) -> pa.Table:
    """Keep-list of one shard: key, sample_id, keep, and the first failing filter's reason."""
    rows = []
    for sample in table.to_pylist():
        reason = next((r for f in filters if (r := f.reason(sample)) is not None), None)
        rows.append({"key": sample["key"], "sample_id": sample.get("sample_id"),
                     "keep": reason is None, "reason": reason})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=KEEP_LIST_SCHEMA)


def mark_duplicates(
    shards: Iterable[tuple[pa.Table, pa.Table]], images: bool = True, urls: bool = True
) -> list[pa.Table]:
    """Drops repeated images and URLs across shards, in shard order; first occurrence kept.

    Args:
        shards: (metadata table, keep-list) per shard, in shard order.
    """
    seen_hashes, seen_urls, out = set(), set(), []
    for metadata, keep_list in shards:
        rows = keep_list.to_pylist()
        for row, meta in zip(rows, metadata.select(["sha256", "url"]).to_pylist()):
            if not row["keep"]:
                continue
            if urls and meta["url"] in seen_urls:
                row.update(keep=False, reason="duplicate_url")
            elif images and meta["sha256"] in seen_hashes:
                row.update(keep=False, reason="duplicate_image")
            seen_urls.add(meta["url"])
            if row["keep"]:
                seen_hashes.add(meta["sha256"])
        out.append(pa.Table.from_pylist(rows, schema=KEEP_LIST_SCHEMA))
    return out


def summarize(keep_lists: Iterable[pa.Table], ignore: Sequence[str] = ()) -> dict[str, int]:
    """Counts: total, kept, and dropped per reason; rows whose reason is in `ignore` not counted."""
    counts: dict[str, int] = {"total": 0, "kept": 0}
    for table in keep_lists:
        for keep, reason in zip(table["keep"].to_pylist(), table["reason"].to_pylist()):
            if reason in ignore:
                continue
            counts["total"] += 1
            if keep:
                counts["kept"] += 1
            else:
                counts[reason] = counts.get(reason, 0) + 1
    return counts


def summary_table(counts: dict[str, int]) -> str:
    """Markdown table of filter counts: total, kept, and each drop reason."""
    total = counts.get("total", 0)
    share = (lambda n: f"{n / total:.1%}") if total else (lambda n: "-")
    rows = [["total", total, ""], ["kept", counts.get("kept", 0), share(counts.get("kept", 0))]]
    drops = sorted((k, v) for k, v in counts.items() if k not in ("total", "kept"))
    rows += [[f"dropped: {reason}", n, share(n)] for reason, n in drops]
    return markdown.table(["", "samples", "share"], rows, "lrr")
