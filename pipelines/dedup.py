"""Superseded attempts and duplicates, resolved over hash buckets: pure functions over tables.

Every attempt has a position `pos` = (unit << 24) | row, where units are the (source, shard) pairs
in run order, so "first" and "last" are the same as in a single pass over all shards in order.
Rows travel in two hash partitionings, never all in one place:

1. by sample id (the URL's hash): an attempt of a sample that has an attempt in a later shard of
   its source (a repair) is `superseded_by_repair`; of the remaining rows that passed the
   filters, all but the first of a URL are `duplicate_url`;
2. by image sha256: of what is left, all but the first of an image are `duplicate_image`.

The result equals `filter.mark_duplicates` after supersession, run over everything in one process.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.schema import SUPERSEDED

ROW_BITS = 24  # rows per shard < 16.7M
DROPS = pa.schema([("pos", pa.int64()), ("reason", pa.string())])
ATTEMPTS = pa.schema([("pos", pa.int64()), ("source", pa.int32()), ("sample_id", pa.string()),
                      ("passed", pa.bool_()), ("sha256", pa.string())])  # fmt: skip
SURVIVORS = pa.schema([("pos", pa.int64()), ("sha256", pa.string())])


def positions(unit: int, rows: int) -> pa.Array:
    return pa.array(np.arange(rows, dtype=np.int64) + (unit << ROW_BITS))


def unit_of(pos: pa.Array) -> np.ndarray:
    return np.asarray(pos.to_numpy(zero_copy_only=False)) >> ROW_BITS


def row_of(pos: pa.Array) -> np.ndarray:
    return np.asarray(pos.to_numpy(zero_copy_only=False)) & ((1 << ROW_BITS) - 1)


_HEX = np.zeros(256, np.int64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def hex_buckets(values: pa.Array, buckets: int, digits: int = 6) -> np.ndarray:
    """Bucket (0 .. buckets-1) of each hex string (a hash) from its first digits; null -> 0."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    head = pc.utf8_slice_codeunits(pc.fill_null(values, "0" * digits), 0, digits)
    head = pc.utf8_rpad(head, width=digits, padding="0").combine_chunks() if isinstance(
        head, pa.ChunkedArray) else pc.utf8_rpad(head, width=digits, padding="0")  # fmt: skip
    offsets = np.frombuffer(head.buffers()[1], np.int32)[head.offset : head.offset + len(head) + 1]
    data = np.frombuffer(head.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    number = _HEX[data.reshape(len(head), digits)] @ (16 ** np.arange(digits - 1, -1, -1))
    return number % buckets


def split(table: pa.Table, labels: np.ndarray, parts: int) -> list[pa.Table]:
    """`table` cut into `parts` tables by an integer label per row (order kept within each)."""
    order = np.argsort(labels, kind="stable")
    ends = np.cumsum(np.bincount(labels, minlength=parts))
    ordered = table.take(pa.array(order))
    return [ordered.slice(int(end - n), int(n)) for end, n in
            zip(ends, np.diff(np.concatenate([[0], ends])))]  # fmt: skip


def attempt_rows(metadata: pa.Table, reasons: pa.Array, unit: int, source: int) -> pa.Table:
    """What dedup needs of one shard's attempts: position, source, sample id, verdict, sha256."""
    n = metadata.num_rows
    sha = metadata["sha256"] if "sha256" in metadata.column_names else pa.nulls(n, pa.string())
    return pa.table({"pos": positions(unit, n), "source": pa.array([source] * n, pa.int32()),
                     "sample_id": metadata["sample_id"].cast(pa.string()),
                     "passed": pc.is_null(reasons), "sha256": sha.cast(pa.string())},
                    schema=ATTEMPTS)  # fmt: skip


def _not_first(table: pa.Table, keys: list[str], how: str) -> pa.Array:
    """Per row: whether another row of the same `keys` comes `how` ("min": before, "max": after)."""
    best = table.group_by(keys).aggregate([("pos", how)])
    joined = table.select([*keys, "pos"]).join(best, keys=keys)
    lookup = pc.index_in(table["pos"], value_set=joined["pos"])
    return pc.not_equal(table["pos"], pc.take(joined[f"pos_{how}"], lookup))


def resolve_samples(rows: pa.Table, dedup_urls: bool) -> tuple[pa.Table, pa.Table]:
    """One sample-id bucket -> (drops: pos + reason, survivors: pos + sha256)."""
    if rows.num_rows == 0:
        return DROPS.empty_table(), SURVIVORS.empty_table()
    # As the single-process rule: an attempt gives way to one in a later shard (a repair).
    rows = rows.append_column("unit", pc.shift_right(rows["pos"], ROW_BITS))
    last = rows.group_by(["source", "sample_id"]).aggregate([("unit", "max")])
    joined = rows.select(["source", "sample_id", "pos"]).join(last, keys=["source", "sample_id"])
    last_unit = pc.take(joined["unit_max"], pc.index_in(rows["pos"], value_set=joined["pos"]))
    superseded = pc.less(rows["unit"], last_unit)
    candidates = rows.filter(pc.and_(rows["passed"], pc.invert(superseded)))
    drops = [pa.table({"pos": rows.filter(superseded)["pos"],
                       "reason": pa.array([SUPERSEDED] * pc.sum(superseded).as_py(), pa.string())})]
    if dedup_urls and candidates.num_rows:
        repeated = _not_first(candidates, ["sample_id"], "min")
        dup = candidates.filter(repeated)["pos"]
        drops.append(pa.table({"pos": dup,
                               "reason": pa.array(["duplicate_url"] * len(dup), pa.string())}))
        candidates = candidates.filter(pc.invert(repeated))
    return pa.concat_tables(drops).cast(DROPS), candidates.select(["pos", "sha256"]).cast(SURVIVORS)


def resolve_images(rows: pa.Table) -> pa.Table:
    """One sha256 bucket of surviving rows -> drops: all but the first row of each image."""
    rows = rows.filter(pc.is_valid(rows["sha256"]))
    if rows.num_rows == 0:
        return DROPS.empty_table()
    dup = rows.filter(_not_first(rows, ["sha256"], "min"))["pos"]
    return pa.table({"pos": dup, "reason": pa.array(["duplicate_image"] * len(dup), pa.string())})


def apply_drops(reasons: pa.Array, drops: pa.Table, unit: int) -> pa.Array:
    """A shard's filter reasons with the dedup decisions for its rows (unit `unit`) laid over."""
    final = np.array(reasons.to_pylist(), dtype=object)
    mine = drops.filter(pc.equal(pc.shift_right(drops["pos"], ROW_BITS), unit))
    final[row_of(mine["pos"])] = mine["reason"].to_pylist()
    return pa.array(final.tolist(), pa.string())
