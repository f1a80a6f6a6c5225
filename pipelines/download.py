"""img2dataset on Ray: one Ray task per input shard, a bounded window in flight, shard retries.

img2dataset does the downloading (its Reader shards the input, its Downloader fetches, resizes and
writes `NNNNN.tar` / `NNNNN.parquet` / `NNNNN_stats.json`); this module only schedules its shards.
Its own Ray distributor submits every shard at once and ignores `max_shard_retry`; here at most
`max_in_flight` shards run at a time, a failed shard is retried, and a shard whose `_stats.json`
exists is done (img2dataset writes it last), so a rerun after a crash redoes only the rest.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from model.options import FrozenOptions
from pipelines.atomic import write_json, write_parquet
from pipelines.scheduler import run_bounded

INPUT_NAME = "_input.parquet"


class DownloadOptions(FrozenOptions):
    """How images are fetched and stored; resizing keeps resolution (the model tiles itself)."""

    image_size: int = 1792
    """Longest side kept; larger images are shrunk, smaller ones never upscaled."""
    resize_mode: str = "keep_ratio_largest"
    """img2dataset resize mode; keep_ratio_largest bounds the long side."""
    samples_per_shard: int = Field(1000, gt=0)
    """Samples per output shard (one Ray task each)."""
    thread_count: int = Field(16, gt=0)
    """Concurrent fetches inside one shard task."""
    timeout: float = Field(5.0, gt=0)
    """Seconds before a fetch is abandoned."""
    max_in_flight: int = Field(4, gt=0)
    """Shard tasks running at once."""
    shard_retries: int = Field(2, ge=0)
    """Extra attempts for a shard task that fails."""
    cpus_per_task: float = Field(0.5, gt=0)
    """Ray CPUs per shard task (fractional so other stages keep running on small machines)."""
    min_image_size: int = 0
    """Smallest side accepted by img2dataset (the filter step applies the real threshold)."""
    max_image_area: float = 4096 * 4096
    """Largest original area accepted; bigger images fail as oversized."""
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]
    """X-Robots-Tag directives that opt an image out of AI training."""
    repair_rounds: int = Field(1, ge=0)
    """Later passes over URLs that failed for a transient reason (timeout, 5xx)."""


def _img2dataset_downloader(options: DownloadOptions, output_folder: str, column_list: list[str]):
    from img2dataset.downloader import Downloader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import WebDatasetSampleWriter

    resizer = Resizer(
        image_size=options.image_size, resize_mode=options.resize_mode,
        resize_only_if_bigger=True, upscale_interpolation="lanczos", downscale_interpolation="area",
        encode_quality=95, encode_format="jpg", skip_reencode=True, disable_all_reencoding=False,
        min_image_size=options.min_image_size, max_image_area=options.max_image_area,
        max_aspect_ratio=math.inf, blurrer=None,
    )  # fmt: skip
    return Downloader(
        sample_writer_class=WebDatasetSampleWriter, resizer=resizer,
        thread_count=options.thread_count, save_caption=True, extract_exif=False,
        output_folder=output_folder, column_list=column_list, timeout=options.timeout,
        number_sample_per_shard=options.samples_per_shard, oom_shard_count=5,
        compute_hash="sha256", verify_hash_type=None, encode_format="jpg", retries=0,
        user_agent_token=None,
        disallowed_header_directives=options.disallowed_header_directives,
        blurring_bbox_col=None,
    )  # fmt: skip


def done_shards(output_folder: str | Path) -> set[int]:
    """Shard ids whose `_stats.json` exists: img2dataset finished them."""
    return {int(p.name.split("_")[0]) for p in Path(output_folder).glob("[0-9]*_stats.json")}


def _download_shard(downloader, task) -> bool:
    ok, _ = downloader(task)
    return ok


def download_input(input_path: Path, output_folder: Path, options: DownloadOptions,
                   start_shard: int = 0, desc: str = "download shards") -> dict:  # fmt: skip
    """Downloads one input parquet into shards numbered from `start_shard`, skipping done ones."""
    from img2dataset.reader import Reader

    # img2dataset measures width/height itself and writes them under those names.
    own = ("url", "caption", "width", "height")
    extra = [c for c in pq.read_schema(input_path).names if c not in own]
    finished = done_shards(output_folder)
    tmp = output_folder / "_tmp"
    tmp.mkdir(exist_ok=True)
    reader = Reader(
        str(input_path), "parquet", "url", "caption", None, None, extra,
        options.samples_per_shard, finished, str(tmp), start_shard,
    )  # fmt: skip
    tasks = list(reader)
    downloader = _img2dataset_downloader(options, str(output_folder), reader.column_list)
    results = run_bounded(
        _download_shard, tasks, shared=downloader, max_in_flight=options.max_in_flight,
        retries=options.shard_retries, num_cpus=options.cpus_per_task, ok=bool, desc=desc,
    )  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)  # the Reader's input slices; rebuilt on a rerun
    return {"shards": len(results), "skipped": len(finished)}


def download_table(table: pa.Table, output_folder: str | Path, options: DownloadOptions) -> dict:
    """Downloads every row of a normalised source table (sample_id, url, caption, ...) once.

    The table is saved as the folder's input on the first call; later calls (a rerun after a
    crash) reuse that saved input, so shard numbering and contents never change.

    Returns:
        {"shards": shards run now, "skipped": shards already done}.
    """
    output_folder = Path(output_folder).absolute()
    output_folder.mkdir(parents=True, exist_ok=True)
    source = output_folder / INPUT_NAME
    if not source.exists():
        write_parquet(table, source)
    return download_input(source, output_folder, options)


def one_shard_metadata(output_folder: str | Path, shard: int) -> pa.Table:
    """The rows img2dataset recorded for one shard, with a `shard` column."""
    table = pq.read_table(Path(output_folder) / f"{shard:05d}.parquet")
    return table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32()))


def shard_metadata(output_folder: str | Path) -> pa.Table:
    """Every row img2dataset recorded (successes and failures) in finished shards, in order."""
    tables = [one_shard_metadata(output_folder, s) for s in sorted(done_shards(output_folder))]
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _next_repair_round(output_folder: Path) -> tuple[int, dict | None]:
    rounds = sorted(output_folder.glob("_repair-*.json"))
    if rounds:
        plan = json.loads(rounds[-1].read_text())
        if not set(plan["shards"]) <= done_shards(output_folder):
            return plan["round"], plan  # a round that died half way: finish it first
    return len(rounds) + 1, None


def repair(output_folder: str | Path, options: DownloadOptions, is_retryable) -> dict:
    """One repair round: re-downloads samples whose last attempt failed for a transient reason.

    Good shards are never redone; the new attempts land in new shards after the existing ones,
    and the plan is written first, so a repair that dies half way resumes where it stopped.

    Args:
        is_retryable: error message -> whether a later attempt may succeed.

    Returns:
        {"round": n, "retried": samples attempted, "recovered": of them now downloaded}.
    """
    output_folder = Path(output_folder).absolute()
    round_number, plan = _next_repair_round(output_folder)
    input_path = output_folder / f"_repair-{round_number:03d}.parquet"
    if plan is None:
        latest = latest_attempts(shard_metadata(output_folder))
        retry = [
            row["sample_id"]
            for row in latest.to_pylist()
            if row["status"] != "success" and is_retryable(row["error_message"] or "")
        ]
        if not retry:
            return {"round": round_number, "retried": 0, "recovered": 0}
        source = pq.read_table(output_folder / INPUT_NAME)
        write_parquet(source.filter(pc.is_in(source["sample_id"], pa.array(retry))), input_path)
        start = max(done_shards(output_folder)) + 1
        count = math.ceil(len(retry) / options.samples_per_shard)
        plan = {"round": round_number, "start": start, "shards": list(range(start, start + count)),
                "retried": len(retry)}  # fmt: skip
        write_json(plan, output_folder / f"_repair-{round_number:03d}.json")
    download_input(input_path, output_folder, options, start_shard=plan["start"],
                   desc=f"repair {round_number} shards")  # fmt: skip
    repaired = shard_metadata(output_folder)
    repaired = repaired.filter(pc.is_in(repaired["shard"], pa.array(plan["shards"])))
    recovered = sum(s == "success" for s in repaired["status"].to_pylist())
    return {"round": round_number, "retried": plan["retried"], "recovered": recovered}


def latest_attempts(metadata: pa.Table) -> pa.Table:
    """One row per sample: its last attempt (highest shard), which is its final status."""
    if metadata.num_rows == 0:
        return metadata
    last = {}
    for index, (sid, shard) in enumerate(
        zip(metadata["sample_id"].to_pylist(), metadata["shard"].to_pylist())
    ):
        if sid not in last or shard >= last[sid][1]:
            last[sid] = (index, shard)
    return metadata.take(sorted(i for i, _ in last.values()))
