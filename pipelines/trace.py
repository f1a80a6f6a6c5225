"""`evip trace`: one sample's whole lineage, read back from the run's files by its sample id.

Source row (plan) -> every download attempt (shards, repairs included) -> the filter's verdict on
each attempt -> the caption(s) -> the stage shards that hold it; for a duplicate, the copy that was
kept instead. Each lookup is a
filtered parquet scan (row groups pushed down), so memory does not grow with the run.
"""

from __future__ import annotations

import re

import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines import storage
from pipelines.layout import RunLayout
from pipelines.sources import sample_id as id_of_url

SHARD_FILES = "[0-9]*.parquet"


def _scan(folder: str, column: str, value: str, columns: list[str] | None = None) -> list[dict]:
    """Rows of every shard parquet in `folder` whose `column` equals `value`, with `shard`."""
    files = storage.glob(storage.join(folder, SHARD_FILES))
    if not files:
        return []
    fs, _ = storage.filesystem(folder)
    paths = [storage.filesystem(f)[1] for f in files]
    dataset = ds.dataset(paths, filesystem=fs, format="parquet")
    names = [c for c in (columns or dataset.schema.names) if c in dataset.schema.names]
    table = dataset.to_table(columns=names + ["__filename"], filter=pc.field(column) == value)
    rows = []
    for row in table.to_pylist():
        row["shard"] = int(row.pop("__filename").rsplit("/", 1)[1].split(".")[0])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["shard"], r.get("key") or ""))


def resolve_id(query: str) -> str:
    """A sample id as given (16 hex digits), or the id of a URL."""
    return query if re.fullmatch(r"[0-9a-f]{16}", query) else id_of_url(query)


def trace_sample(layout: RunLayout, sources: list[str], teacher: str, query: str) -> dict:
    """The lineage of one sample in every source of the run that holds it."""
    sid = resolve_id(query)
    found = []
    for source in sources:
        raw = layout.raw_folder(source)
        plan = _scan(raw.plan(), "sample_id", sid)
        attempts = _scan(raw.url, "sample_id", sid)
        if not plan and not attempts:
            continue
        verdicts = {(r["shard"], r["key"]): r for r in _scan(layout.filtered(source),
                                                               "sample_id", sid)}  # fmt: skip
        for attempt in attempts:
            verdict = verdicts.get((attempt["shard"], attempt["key"]))
            attempt["verdict"] = None if verdict is None else (verdict["reason"] or "kept")
        captions = _scan(layout.captions(teacher, source), "sample_id", sid)
        found.append({"source": source, "plan": plan, "attempts": attempts, "captions": captions})
    for entry in found:
        entry["stage_shards"] = _stage_shards(layout, entry["source"], sid)
        for attempt in entry["attempts"]:
            if attempt["verdict"] in ("duplicate_url", "duplicate_image"):
                attempt["kept_copy"] = _kept_copy(layout, sources, attempt)
    return {"sample_id": sid, "sources": found}


def _stage_shards(layout: RunLayout, source: str, sid: str) -> list[dict]:
    """Stage shards (any stage) that hold the sample from `source`."""
    held = []
    for folder in storage.glob(storage.join(layout.stages(), "*")):
        index = storage.join(folder, "_index")
        for row in _scan_files(storage.glob(storage.join(index, "shard-*.parquet")), sid):
            if row["source"] == source:
                held.append({"stage": folder.rstrip("/").rsplit("/", 1)[1], **row})
    return held


def _scan_files(files: list[str], sid: str) -> list[dict]:
    if not files:
        return []
    fs, _ = storage.filesystem(files[0])
    dataset = ds.dataset([storage.filesystem(f)[1] for f in files], filesystem=fs,
                         format="parquet")  # fmt: skip
    table = dataset.to_table(columns=[*dataset.schema.names, "__filename"],
                             filter=pc.field("sample_id") == sid)  # fmt: skip
    rows = table.to_pylist()
    for row in rows:
        row["stage_shard"] = row.pop("__filename").rsplit("/", 1)[1].split(".")[0]
    return rows


def _kept_copy(layout: RunLayout, sources: list[str], attempt: dict) -> dict | None:
    """The attempt that was kept in place of a duplicate: same URL, or same image."""
    column, value = (("sample_id", attempt["sample_id"]) if attempt["verdict"] == "duplicate_url"
                     else ("sha256", attempt["sha256"]))  # fmt: skip
    for source in sources:
        for other in _scan(layout.raw(source), column, value, ["key", "sample_id", "url"]):
            kept = _scan(layout.filtered(source), "key", other["key"])
            if kept and kept[0]["keep"] and kept[0]["shard"] == other["shard"]:
                return {"source": source, **other}
    return None


def format_trace(trace: dict) -> str:
    """The lineage as text, one block per source."""
    if not trace["sources"]:
        return f"sample {trace['sample_id']}: not found in any source of this run"
    lines = [f"sample {trace['sample_id']}"]
    for entry in trace["sources"]:
        lines.append(f"\nsource {entry['source']}")
        for row in entry["plan"]:
            lines.append(f"  source row: {row['source_file']} row {row['source_row']}")
            lines.append(f"    url {row['url']}\n    alt-text {row['caption']!r}")
        for a in entry["attempts"]:
            outcome = a["status"] if a["status"] == "success" else f"{a['status']}: " \
                f"{a['error_message']}"  # fmt: skip
            size = f" {a['original_width']}x{a['original_height']} sha256 {a['sha256'][:12]}" \
                if a["status"] == "success" else ""  # fmt: skip
            lines.append(f"  download attempt: shard {a['shard']:05d} key {a['key']}: "
                         f"{outcome}{size}")  # fmt: skip
            lines.append(f"    filter: {a['verdict'] or 'not filtered yet'}")
            copy = a.get("kept_copy")
            if copy:
                lines.append(f"    kept copy instead: {copy['source']} shard {copy['shard']:05d} "
                             f"key {copy['key']} ({copy['url']})")  # fmt: skip
        for c in entry["captions"]:
            origin = f"alt-text fallback ({c['reason']})" if c["fallback"] else "teacher"
            lines.append(f"  caption ({origin}, prompt {c['prompt']!r}): {c['caption']!r}")
        for s in entry.get("stage_shards", []):
            lines.append(f"  stage {s['stage']}: {s['stage_shard']}.tar key {s['key']} "
                         f"(task {s['task']}, from raw shard {s['raw_shard']:05d} key "
                         f"{s['raw_key']})")  # fmt: skip
    return "\n".join(lines)
