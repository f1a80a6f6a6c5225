"""The recaption job on Ray Data: kept samples of raw shards -> one caption parquet per shard.

Exactly once: a shard's captions are written to a temporary name and renamed when every kept
sample of the shard has its row, so a shard either has its complete file or none. A rerun plans
only shards without a file; a shard half done when the job died is redone from scratch, and rows
are keyed by sample, so a retried Ray task can never add a second caption.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from pipelines.atomic import write_parquet
from pipelines.records import kept_keys
from recaption.options import CleaningOptions, RecaptionJobOptions, TeacherOptions
from recaption.stages import OUTPUT_COLUMNS, Caption, Preprocess, read_shard
from recaption.teacher import resolve_backend

CAPTION_SCHEMA = pa.schema([
    ("shard", pa.int64()), ("key", pa.string()), ("sample_id", pa.string()),
    ("caption", pa.string()), ("teacher_caption", pa.string()), ("raw_caption", pa.string()),
    ("fallback", pa.bool_()), ("reason", pa.string()), ("prompt", pa.string()),
])  # fmt: skip


@dataclass(frozen=True)
class ShardWork:
    """One input shard: where its samples are, how many are kept, where its captions go."""

    shard: int
    tar: str
    keep_list: str
    expected: int
    output: str


def plan_shards(raw_folder: Path, filtered_folder: Path, out_folder: Path):
    """(shards still to caption, shards already captioned)."""
    pending, done = [], []
    for keep_list in sorted(filtered_folder.glob("[0-9]*.parquet")):
        shard = int(keep_list.stem)
        output = out_folder / f"{shard:05d}.parquet"
        if output.exists():
            done.append(shard)
            continue
        pending.append(ShardWork(shard, str(raw_folder / f"{shard:05d}.tar"), str(keep_list),
                                 len(kept_keys(keep_list)), str(output)))  # fmt: skip
    return pending, done


def write_captions(rows: list[dict], path: str, settings: dict) -> None:
    """Writes one shard's captions atomically (temporary name, then rename)."""
    rows = sorted(rows, key=lambda r: r["key"])
    table = pa.Table.from_pylist(rows, schema=CAPTION_SCHEMA)
    write_parquet(table.replace_schema_metadata({"evip.recaption": json.dumps(settings)}), path)


class RecaptionJob:
    """Recaptions one source with one teacher (`captions/<teacher>/<source>/NNNNN.parquet`)."""

    def __init__(self, teacher_path: str, teacher: TeacherOptions, cleaning: CleaningOptions,
                 job: RecaptionJobOptions):  # fmt: skip
        self.teacher_path, self.teacher, self.cleaning, self.job = (
            teacher_path,
            teacher,
            cleaning,
            job,
        )

    @property
    def settings(self) -> dict:
        return {"teacher": self.teacher.model_dump(), "cleaning": self.cleaning.model_dump()}

    def dataset(self, pending: list[ShardWork]):
        """The Ray Data pipeline over the pending shards (lazy until consumed)."""
        import ray

        backend = resolve_backend(self.teacher, self.job.gpus_per_actor)
        items = [{"shard": w.shard, "tar": w.tar, "keep_list": w.keep_list} for w in pending]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.flat_map(read_shard, num_cpus=self.job.preprocess_cpus)
        ds = ds.map_batches(
            Preprocess, fn_constructor_args=(self.teacher_path, self.teacher, backend),
            batch_size=self.job.preprocess_batch_size, num_cpus=self.job.preprocess_cpus,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, self.job.actors * 2)),
        )  # fmt: skip
        return ds.map_batches(
            Caption,
            fn_constructor_args=(self.teacher_path, self.teacher, self.cleaning,
                                 self.job.torch_threads, backend),
            batch_size=self.job.batch_size, num_cpus=self.job.cpus_per_actor,
            num_gpus=self.job.gpus_per_actor or None,
            compute=ray.data.ActorPoolStrategy(size=self.job.actors),
        )  # fmt: skip

    def run(self, raw_folder: str | Path, filtered_folder: str | Path, out_folder: str | Path,
            on_shard_written=None):  # fmt: skip
        """Captions every shard that has no caption file yet; returns the report.

        Args:
            on_shard_written: called as (shard, images) after each shard's file is renamed.
        """
        raw_folder, filtered_folder = Path(raw_folder), Path(filtered_folder)
        out_folder = Path(out_folder)
        out_folder.mkdir(parents=True, exist_ok=True)
        pending, done = plan_shards(raw_folder, filtered_folder, out_folder)
        start = time.perf_counter()
        reasons, images = Counter(), 0
        work = {w.shard: w for w in pending}
        for w in [w for w in pending if w.expected == 0]:
            write_captions([], w.output, self.settings)
            del work[w.shard]
        buffers: dict[int, dict[str, dict]] = {s: {} for s in work}
        with tqdm(total=len(work), desc="caption shards", unit="shards") as progress:
            if work:
                for batch in self.dataset(list(work.values())).iter_batches(
                    batch_size=None, batch_format="pyarrow"
                ):
                    for row in batch.select(list(OUTPUT_COLUMNS)).to_pylist():
                        shard = buffers.get(row["shard"])
                        if shard is None or row["key"] in shard:
                            continue  # a retried task's repeat: the first row stands
                        shard[row["key"]] = row
                        if len(shard) == work[row["shard"]].expected:
                            rows = list(buffers.pop(row["shard"]).values())
                            write_captions(rows, work[row["shard"]].output, self.settings)
                            images += len(rows)
                            reasons.update(r["reason"] or "kept" for r in rows)
                            progress.update(1)
                            if on_shard_written is not None:
                                on_shard_written(row["shard"], len(rows))
        if buffers:
            missing = {s: work[s].expected - len(b) for s, b in buffers.items()}
            raise RuntimeError(f"shards ended incomplete (samples missing per shard): {missing}")
        seconds = time.perf_counter() - start
        return {"shards": len(pending), "skipped": len(done), "images": images,
                "kept": reasons.pop("kept", 0), "rejected": dict(reasons),
                "images_per_s": images / seconds if seconds else 0.0}  # fmt: skip


def report_table(report: dict) -> str:
    """Markdown table of a recaption report."""
    rows = ["| | |", "| --- | ---: |", f"| shards captioned | {report['shards']} |",
            f"| shards already done | {report['skipped']} |", f"| images | {report['images']} |",
            f"| teacher captions kept | {report['kept']} |"]  # fmt: skip
    rows += [
        f"| rejected: {r} (alt-text kept) | {n} |" for r, n in sorted(report["rejected"].items())
    ]
    rows.append(f"| images/s | {report['images_per_s']:.1f} |")
    return "\n".join(rows)
