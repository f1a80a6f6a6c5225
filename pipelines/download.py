"""img2dataset on Ray: one Ray task per input shard, a bounded window in flight, shard retries.

img2dataset does the downloading (its Reader shards the input, its Downloader fetches, resizes and
writes `NNNNN.tar` / `NNNNN.parquet` / `NNNNN_stats.json`); this module only schedules its shards.
Its own Ray distributor submits every shard at once and ignores `max_shard_retry`; here at most
`max_in_flight` shards run at a time, a failed shard is retried, and a shard whose `_stats.json`
exists is done (img2dataset writes it last), so a rerun after a crash redoes only the rest.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from model.options import FrozenOptions

RETRYABLE_ERRORS = ("timed out", "timeout", "HTTP Error 5", "Connection reset", "Remote end closed")


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
    return {int(p.name.split("_")[0]) for p in Path(output_folder).glob("*_stats.json")}


def download_table(table: pa.Table, output_folder: str | Path, options: DownloadOptions) -> dict:
    """Downloads every row of a normalised source table (url, caption, sample_id, ...) once.

    Returns:
        {"shards": n, "skipped": already done, "retried": shard retries used}.
    """
    import ray
    from img2dataset.reader import Reader

    output_folder = Path(output_folder).absolute()
    output_folder.mkdir(parents=True, exist_ok=True)
    source = output_folder / "_input.parquet"
    if not source.exists():  # the same input on every rerun gives the same shards
        pq.write_table(table, str(source) + ".tmp")
        os.replace(str(source) + ".tmp", source)
    # img2dataset measures width/height itself and writes them under those names.
    own = ("url", "caption", "width", "height")
    extra = [c for c in pq.read_schema(source).names if c not in own]
    finished = done_shards(output_folder)
    (output_folder / "_tmp").mkdir(exist_ok=True)
    reader = Reader(
        str(source), "parquet", "url", "caption", None, None, extra, options.samples_per_shard,
        finished, str(output_folder / "_tmp"), 0,
    )  # fmt: skip
    downloader = _img2dataset_downloader(options, str(output_folder), reader.column_list)
    run_shard = ray.remote(num_cpus=options.cpus_per_task, max_retries=0)(lambda d, task: d(task))
    downloader_ref = ray.put(downloader)
    pending, attempts, retried, shards = {}, {}, 0, 0
    queue = list(reader)
    while queue or pending:
        while queue and len(pending) < options.max_in_flight:
            task = queue.pop(0)
            shards += 1 if task[0] not in attempts else 0
            attempts[task[0]] = attempts.get(task[0], 0) + 1
            pending[run_shard.remote(downloader_ref, task)] = task
        ready, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready[0])
        try:
            ok, _ = ray.get(ready[0])
        except ray.exceptions.RayError:
            ok = False
        if not ok:
            if attempts[task[0]] > options.shard_retries:
                raise RuntimeError(f"shard {task[0]} failed {attempts[task[0]]} times")
            retried += 1
            queue.append(task)
    return {"shards": shards, "skipped": len(finished), "retried": retried}
