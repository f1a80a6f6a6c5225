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
from pipelines.completion import CompletionLog
from pipelines.download import DownloadOptions, download_shards, shard_metadata, shard_tasks
from pipelines.download_report import is_retryable
from pipelines.layout import RawFolder, shard_name
from pipelines.schema import ATTEMPT_COLUMNS
from pipelines.units import Resources, UnitWork, run_units


def retry_rows(metadata: pa.Table) -> pa.Table:
    """The plan rows of one shard's attempts that failed for a transient reason."""
    failed = metadata.filter(pc.not_equal(metadata["status"], "success"))
    retry = pa.array([is_retryable(m) for m in failed["error_message"].to_pylist()], pa.bool_())
    failed = failed.filter(retry) if failed.num_rows else failed
    carried = [c for c in failed.column_names if c not in ATTEMPT_COLUMNS and c != "shard"]
    return failed.select(carried)


def _plan_shard(shared, shard: int) -> dict:
    raw_url, round_number = shared
    raw = RawFolder(raw_url)
    rows = retry_rows(shard_metadata(raw, shard))
    if rows.num_rows:
        storage.write_parquet(rows, raw.repair_input(round_number, shard))
    return {"rows": rows.num_rows}


def repair_round(raw: RawFolder, options: DownloadOptions, settings: dict, round_number: int,
                 previous: list[int], start: int, make_downloader=None) -> dict:  # fmt: skip
    """One repair round over the shards of the round before; new shards numbered from `start`.

    Returns:
        {"round", "retried": samples attempted again, "recovered": of them now downloaded,
         "shards": the round's new shard numbers}.
    """
    log = CompletionLog(raw.repair(round_number))
    round_settings = {**settings, "round": round_number, "previous": previous, "start": start}
    record = log.read("round")
    if record is None or not log.is_complete("round", round_settings):
        run_units(UnitWork(log.folder, f"plan repair {round_number} shards",
                           {shard_name(s): s for s in previous}, lambda unit: round_settings,
                           _plan_shard, shared=(raw.url, round_number),
                           resources=Resources(options.cpus_per_task,
                                               max_in_flight=options.max_in_flight)))  # fmt: skip
        inputs = []
        for shard in previous:
            rows = log.read(shard_name(shard))["covered"]["rows"]
            if rows:
                inputs.append((raw.repair_input(round_number, shard), rows))
        record = log.write("round", round_settings, {"inputs": inputs})
    inputs = [tuple(i) for i in record["covered"]["inputs"]]
    tasks = shard_tasks(inputs, start, options.samples_per_shard, across_files=True)
    download_shards(tasks, raw, options, settings, desc=f"repair {round_number} shards",
                    make_downloader=make_downloader)  # fmt: skip
    shards = [t.shard for t in tasks]
    recovered = sum(storage.read_json(raw.shard(s, "_stats.json"))["successes"] for s in shards)
    return {"round": round_number, "retried": sum(n for _, n in inputs), "recovered": recovered,
            "shards": shards}  # fmt: skip
