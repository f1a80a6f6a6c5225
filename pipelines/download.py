"""img2dataset on Ray: one Ray task per shard, a bounded window in flight, shard retries.

img2dataset's Downloader fetches, resizes and writes `NNNNN.tar` / `NNNNN.parquet` /
`NNNNN_stats.json`; this module only feeds and schedules its shards. Each task cuts its own input
slice from a plan file (so no input passes through the driver), runs the Downloader, and writes
the shard's completion record last. Its own Ray distributor submits every shard at once and
ignores `max_shard_retry`; here at most `max_in_flight` shards run at a time, a failed shard is
retried, and a rerun redoes only shards without a record made with the same settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from model.options import FrozenOptions
from pipelines import storage
from pipelines.completion import CompletionLog, Plan, table_hash
from pipelines.layout import RawFolder, shard_name
from pipelines.outputs import downloaded_shards_in
from pipelines.units import Resources, UnitWork, run_units


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



# Options that change what a shard holds; the others (threads, in-flight, retries) only its speed.
OUTPUT_SETTINGS = ("image_size", "resize_mode", "samples_per_shard", "min_image_size",
                   "max_image_area", "disallowed_header_directives", "timeout")  # fmt: skip


def shard_settings(options: DownloadOptions, task: ShardTask, contents: dict[str, str]) -> dict:
    """What one download shard is made from: the output options and, piece by piece, the content
    of the file it reads (`contents`: URL -> content hash, never the place) and the rows it
    takes. So a new source file downloads its own shards only, and an edited one only the shards
    that read it."""
    return {"download": {k: getattr(options, k) for k in OUTPUT_SETTINGS},
            "pieces": [[contents[url], first, rows] for url, first, rows in task.pieces]}


@dataclass(frozen=True)
class ShardTask:
    """One img2dataset shard: pieces (input parquet URL, first row, rows) read in order."""

    shard: int
    pieces: tuple[tuple[str, int, int], ...]


def shard_tasks(inputs: list[tuple[str, int]], start: int, per_shard: int,
                across_files: bool = False) -> list[ShardTask]:  # fmt: skip
    """Cuts (input file, rows) pairs into shards of `per_shard` rows, numbered from `start`.

    Like img2dataset's Reader, each file starts a new shard (its last shard may be short) unless
    `across_files`, which fills shards from many small files (repair inputs). Only file names and
    row counts are needed, never the rows.
    """
    tasks, pieces, room = [], [], per_shard
    for url, rows in inputs:
        offset = 0
        while offset < rows:
            take = min(room, rows - offset)
            pieces.append((url, offset, take))
            offset, room = offset + take, room - take
            if room == 0 or (offset == rows and not across_files):
                tasks.append(ShardTask(start + len(tasks), tuple(pieces)))
                pieces, room = [], per_shard
    if pieces:
        tasks.append(ShardTask(start + len(tasks), tuple(pieces)))
    return tasks


def read_rows(url: str, offset: int, length: int) -> pa.Table:
    """Rows [offset, offset + length) of a parquet file, reading only the row groups they are in."""
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        groups, first, start = [], None, 0
        for index in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if start + rows > offset and start < offset + length:
                groups.append(index)
                first = start if first is None else first
            start += rows
        table = parquet.read_row_groups(groups) if groups else parquet.schema_arrow.empty_table()
    return table.slice(offset - (first or 0), length)


def _download_shard(shared, task: ShardTask) -> dict | None:
    downloader, raw_url = shared
    raw = RawFolder(raw_url)
    table = pa.concat_tables([read_rows(*piece) for piece in task.pieces])
    # img2dataset measures width/height itself and writes them under those names.
    table = table.select(downloader.column_list)
    feather = raw.shard_input(task.shard)
    fs, path = storage.filesystem(feather)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle, pa.ipc.new_file(handle, table.schema) as writer:
        writer.write_table(table)
    ok, _ = downloader((task.shard, feather))  # img2dataset removes the input slice when done
    return {"pieces": [list(p) for p in task.pieces], "rows": table.num_rows} if ok else None


def column_list(input_url: str) -> list[str]:
    """The columns img2dataset carries from an input file: its extras, then caption and url."""
    own = ("url", "caption", "width", "height")
    fs, path = storage.filesystem(input_url)
    with fs.open(path, "rb") as handle:
        names = pq.read_schema(handle).names
    return [c for c in names if c not in own] + ["caption", "url"]


def clear_shard(raw: RawFolder, shard: int) -> None:
    """Removes a shard's record first, then its files (a stale or half-written shard)."""
    CompletionLog(raw.url).clear(shard_name(shard))
    _remove_shard_files(raw, shard)


def _remove_shard_files(raw: RawFolder, shard: int) -> None:
    for ext in ("tar", "parquet", "_stats.json"):
        storage.remove(raw.shard(shard, ext))


def download_shards(tasks: list[ShardTask], raw: RawFolder, options: DownloadOptions,
                    contents: dict[str, str], desc: str = "download shards",
                    make_downloader=None) -> Plan:  # fmt: skip
    """Downloads every task whose shard has no record made with its `shard_settings`; returns
    the plan.

    Args:
        contents: input file URL -> its content hash, for every file the tasks read.
        make_downloader: (options, output folder, column list) -> a callable like img2dataset's
            Downloader; img2dataset's by default (benchmarks plug in a fabricated one).
    """
    make_downloader = make_downloader or _img2dataset_downloader
    columns = column_list(tasks[0].pieces[0][0]) if tasks else []
    units = {shard_name(t.shard): t for t in tasks}
    return run_units(UnitWork(
        raw.url, desc, units, lambda unit: shard_settings(options, units[unit], contents),
        _download_shard, shared=(make_downloader(options, raw.url, columns), raw.url),
        clear=lambda unit: _remove_shard_files(raw, int(unit)),
        resources=Resources(options.cpus_per_task, max_in_flight=options.max_in_flight,
                            retries=options.shard_retries)))  # fmt: skip


def complete_shards(raw: RawFolder) -> list[int]:
    """Shards of the folder that have a completion record."""
    return downloaded_shards_in(raw.url).shards


def download_table(table: pa.Table, output_folder: str, options: DownloadOptions) -> dict:
    """Downloads every row of a table of plan rows (sample_id, url, caption, ...) once.

    The table is saved as the folder's only plan file on the first call; later calls reuse it,
    so shard numbering and contents never change. (Runs plan sources with `pipelines.plan`.)

    Returns:
        {"shards": shards run now, "skipped": shards already complete}.
    """
    raw = RawFolder(str(output_folder))
    plan_file = raw.plan_file(0)
    if not storage.exists(plan_file):
        storage.write_parquet(table, plan_file)
    rows = storage.parquet_rows(plan_file)
    tasks = shard_tasks([(plan_file, rows)], 0, options.samples_per_shard)
    contents = {plan_file: table_hash(storage.read_parquet(plan_file))}
    plan = download_shards(tasks, raw, options, contents)
    return {"shards": len(plan.todo), "skipped": len(plan.done)}


def shard_metadata(raw: RawFolder, shard: int) -> pa.Table:
    """The rows img2dataset recorded for one shard (successes and failures), with `shard`."""
    table = storage.read_parquet(raw.shard(shard, "parquet"))
    return table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32()))
