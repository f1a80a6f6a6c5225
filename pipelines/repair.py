"""Repair rounds: re-download samples whose attempt failed for a transient reason (timeout, 5xx).

Round r retries the retryable failures of round r-1's shards (round 0: the first download), so
each round is planned shard by shard in Ray tasks, never from a table of every sample: task s
writes `raw/<source>/_repair/RRR/NNNNN.parquet` with the plan rows to retry from shard s. New
attempts land in new shards after the existing ones; good shards are never redone. The round's own
record (unit `round`) is written once its inputs exist, so a repair that dies half way resumes.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.completion import CompletionLog, table_hash
from pipelines.download import (
    DownloadOptions,
    ShardTask,
    download_shards,
    shard_metadata,
    shard_tasks,
)
from pipelines.download_report import is_retryable
from pipelines.layout import RawFolder, shard_name
from pipelines.schema import ATTEMPT_COLUMNS
from pipelines.units import Resources, UnitWork, run_units


def retry_rows(metadata: pa.Table) -> pa.Table:
    """The plan rows of one shard's attempts that failed for a transient reason, in key order.

    img2dataset lists a shard's attempts in the order its threads finish; in key order the
    repair shard numbers its samples the same way every run (and its content hash is stable).
    """
    failed = metadata.filter(pc.not_equal(metadata["status"], "success"))
    retry = pa.array([is_retryable(m) for m in failed["error_message"].to_pylist()], pa.bool_())
    failed = failed.filter(retry).sort_by("key") if failed.num_rows else failed
    carried = [c for c in failed.column_names if c not in ATTEMPT_COLUMNS and c != "shard"]
    return failed.select(carried)


def _plan_shard(shared, shard: int) -> dict:
    raw_url, round_number = shared
    raw = RawFolder(raw_url)
    rows = retry_rows(shard_metadata(raw, shard))
    if rows.num_rows:
        storage.write_parquet(rows, raw.repair_input(round_number, shard))
    return {"rows": rows.num_rows, "content": table_hash(rows)}


def repair_tasks(record: dict, options: DownloadOptions) -> list[ShardTask]:
    """The download shards of a repair round, from its `round` record."""
    inputs = [tuple(i) for i in record["covered"]["inputs"]]
    start = record["settings"]["start"]
    return shard_tasks(inputs, start, options.samples_per_shard, across_files=True)


def repair_round(raw: RawFolder, options: DownloadOptions, round_number: int,
                 previous: list[int], start: int, make_downloader=None) -> dict:  # fmt: skip
    """One repair round over the shards of the round before; new shards numbered from `start`.

    What a round retries is chained to the content of the shards it reads (their records'
    settings), so a shard downloaded again is planned again and an untouched one is not.

    Returns:
        {"round", "retried": samples attempted again, "recovered": of them now downloaded,
         "shards": the round's new shard numbers}.
    """
    log, downloads = CompletionLog(raw.repair(round_number)), CompletionLog(raw.url)
    made_with = {shard_name(s): downloads.read(shard_name(s))["settings_hash"] for s in previous}
    round_settings = {"round": round_number, "start": start, "previous": made_with}
    record = log.read("round")
    if record is None or not log.is_complete("round", round_settings):
        run_units(UnitWork(log.folder, f"plan repair {round_number} shards",
                           {shard_name(s): s for s in previous},
                           lambda unit: {"round": round_number, "made_with": made_with[unit]},
                           _plan_shard, shared=(raw.url, round_number),
                           clear=lambda unit: storage.remove(raw.repair_input(round_number,
                                                                              int(unit))),
                           resources=Resources(options.cpus_per_task,
                                               max_in_flight=options.max_in_flight)))  # fmt: skip
        inputs, contents = [], {}
        for shard in previous:
            covered = log.read(shard_name(shard))["covered"]
            if covered["rows"]:
                url = raw.repair_input(round_number, shard)
                inputs.append((url, covered["rows"]))
                contents[url] = covered["content"]
        record = log.write("round", round_settings, {"inputs": inputs, "contents": contents})
    inputs = record["covered"]["inputs"]
    tasks = repair_tasks(record, options)
    download_shards(tasks, raw, options, record["covered"]["contents"],
                    desc=f"repair {round_number} shards", make_downloader=make_downloader)
    shards = [t.shard for t in tasks]
    recovered = sum(storage.read_json(raw.shard(s, "_stats.json"))["successes"] for s in shards)
    return {"round": round_number, "retried": sum(n for _, n in inputs), "recovered": recovered,
            "shards": shards}  # fmt: skip
