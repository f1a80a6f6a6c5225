"""Source planning: each source file read, metadata-filtered and normalised in its own Ray task.

The driver sees file names and row counts only: task i writes `raw/<source>/_plan/NNNNN.parquet`
(`schema.PLAN_ROW`, sample ids computed there) and its completion record, so a source of any size
is planned in the memory of one file, and a rerun replans only new or changed files.
"""

from __future__ import annotations

from collections import Counter

from pipelines import storage
from pipelines.completion import CompletionLog, table_hash
from pipelines.layout import RawFolder, shard_name
from pipelines.sources import SourceOptions, read_source_file, validate_source
from pipelines.units import Resources, UnitWork, run_units

PLAN_ROW_GROUP = 65_536  # download tasks read their slice by row group


def plan_settings(options: SourceOptions, path: str) -> dict:
    """A file is planned again when it is replaced (size, version) or moved; downloads are
    chained to the planned rows' content (`planned`), so only a changed file downloads again."""
    return {"source": options.model_dump(mode="json", exclude={"paths"}), "file": path,
            "version": storage.fingerprint(path)}  # fmt: skip


def _plan_file(shared, unit: tuple[int, str]) -> dict:
    options, raw_url = shared
    index, path = unit
    raw = RawFolder(raw_url)
    table, dropped = read_source_file(options, path)
    storage.write_parquet(table, raw.plan_file(index), row_group_size=PLAN_ROW_GROUP)
    # The rows' content without their lineage path: what downloads read, wherever the file sits.
    content = table_hash(table.drop_columns(["source_file"]))
    return {"rows": table.num_rows, "dropped": dropped, "content": content}


def plan_source(options: SourceOptions, raw: RawFolder, max_in_flight: int = 4,
                num_cpus: float = 0.5) -> dict:  # fmt: skip
    """Plans every file of a source (skipping files already planned with the same settings).

    Returns:
        `planned(raw, files)`.
    """
    files = validate_source(options)
    units = {shard_name(i): (i, path) for i, path in enumerate(files)}
    run_units(UnitWork(raw.plan(), f"plan {options.name} files", units,
                       lambda unit: plan_settings(options, units[unit][1]), _plan_file,
                       shared=(options, raw.url), exclusive=True,
                       clear=lambda unit: storage.remove(raw.plan_file(int(unit))),
                       resources=Resources(num_cpus, max_in_flight=max_in_flight)))  # fmt: skip
    return planned(raw, len(files))


def planned(raw: RawFolder, files: int) -> dict | None:
    """What the plan records of a source say (None while a file is not planned yet).

    Returns:
        {"inputs": [(plan file URL, rows)] in file order, "dropped": {reason: rows}, "rows",
         "contents": {plan file URL: its rows' content hash}: what download shards chain to}.
    """
    log = CompletionLog(raw.plan())
    inputs, dropped, contents = [], Counter(), {}
    for index in range(files):
        record = log.read(shard_name(index))
        if record is None:
            return None
        inputs.append((raw.plan_file(index), record["covered"]["rows"]))
        dropped.update(record["covered"]["dropped"])
        # By content: a source file moved or renamed (or the run root copied elsewhere) is
        # planned again but downloads nothing again.
        contents[raw.plan_file(index)] = record["covered"]["content"]
    return {"inputs": inputs, "dropped": dict(dropped), "rows": sum(n for _, n in inputs),
            "contents": contents}  # fmt: skip
