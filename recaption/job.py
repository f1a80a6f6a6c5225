"""The recaption job on Ray Data: kept samples of raw shards -> one caption parquet per shard.

Exactly once: a writer actor (not the driver) buffers each shard's rows and writes its file, then
its completion record, when every kept sample has its row. A rerun plans only shards without a
record made with the same settings; a shard half done when the job died is redone from scratch,
and rows are keyed by sample, so a retried Ray task can never add a second caption.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from tqdm.auto import tqdm

from pipelines import storage
from pipelines.completion import CompletionLog, Plan, settings_hash
from pipelines.layout import shard_name, shard_of
from pipelines.outputs import kept_shards_in
from pipelines.records import kept_count, kept_keys
from pipelines.units import UnitWork, prepare_units
from recaption.options import CleaningOptions, RecaptionJobOptions, TeacherOptions
from recaption.reading import read_shard
from recaption.stages import Caption, Preprocess
from recaption.subset import CaptionSubset, caption_subset
from recaption.teacher import check_checkpoint, resolve_backend
from recaption.writer import CaptionWriter, write_sealed


@dataclass(frozen=True)
class ShardWork:
    """One input shard: where its samples are, how many are kept, where its captions go."""

    shard: int
    tar: str
    keep_list: str
    expected: int
    output: str


def caption_settings(teacher: TeacherOptions, cleaning: CleaningOptions, raw_url: str,
                     filtered_url: str, unit: str,
                     subset: CaptionSubset | None = None) -> dict:  # fmt: skip
    """What makes caption shard `unit`, and nothing else: the teacher, the cleaning and what it
    captions, i.e. the samples its keep-list keeps (key and sample id), the subset of them drawn
    when `recaption.samples` caps the captions, and the download record of the raw shard their
    images are in. Not the filter record, which covers every shard of every source: one more
    shard or source then redoes no other shard's captions. How the engine is laid out and whether
    remote code runs change no caption, so they are left out."""
    download = CompletionLog(raw_url).read(unit)
    kept = kept_keys(storage.join(filtered_url, f"{unit}.parquet"))
    settings = {"teacher": teacher.model_dump(mode="json", exclude={"vllm", "trust_remote_code"}),
                "cleaning": cleaning.model_dump(mode="json"),
                "kept": settings_hash(sorted(kept.items())),
                "download": download["settings_hash"] if download else None}  # fmt: skip
    if subset is not None:  # absent without a cap: records made before it stay valid
        settings["subset"] = subset.settings
    return settings


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


    def dataset(self, pending: list[ShardWork], subset: CaptionSubset | None = None):
        """The Ray Data pipeline over the pending shards (lazy until consumed)."""
        import ray

        backend = resolve_backend(self.teacher, self.job.gpus_per_actor)
        check_checkpoint(self.teacher_path, self.teacher, backend)  # before any actor loads it
        parallel = self.teacher.vllm.tensor_parallel_size
        if backend == "vllm" and self.job.gpus_per_actor < parallel:
            raise ValueError(f"teacher.vllm.tensor_parallel_size {parallel} needs "
                             f"recaption.gpus_per_actor >= {parallel}")  # fmt: skip
        rate, seed = (subset.rate, subset.seed) if subset is not None else (1.0, 0)
        items = [{"shard": w.shard, "tar": w.tar, "keep_list": w.keep_list, "rate": rate,
                  "seed": seed} for w in pending]  # fmt: skip
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

    def plan(self, raw_url: str, filtered_url: str, out_url: str,
             subset: CaptionSubset | None = None) -> tuple[Plan, dict, dict]:  # fmt: skip
        """(plan over the keep-lists' shards, {shard: ShardWork} to caption, {unit: settings});
        stale captions, and those of shards no longer kept, are cleared (record, then file).

        Each shard's settings are `caption_settings`: another teacher, prompt, cleaning or
        subset redoes every shard, another keep-list or download only its own.
        """
        filtered = kept_shards_in(filtered_url)
        kept = filtered.kept_per_shard if filtered else {}
        shards = [shard_of(u) for u in storage.glob(storage.join(filtered_url, "*.parquet"))]
        settings = {shard_name(s): caption_settings(self.teacher, self.cleaning, raw_url,
                                                    filtered_url, shard_name(s), subset)
                    for s in shards}  # fmt: skip
        plan = prepare_units(UnitWork(
            out_url, "recaption", dict.fromkeys(settings), settings.__getitem__, exclusive=True,
            clear=lambda unit: storage.remove(storage.join(out_url, f"{unit}.parquet"))))
        work = {}
        for unit in plan.todo:
            shard = int(unit)
            keep_list = storage.join(filtered_url, f"{unit}.parquet")
            if subset is not None:
                expected = sum(map(subset.takes, kept_keys(keep_list).values()))
            else:
                expected = kept[unit] if unit in kept else kept_count(keep_list)
            work[shard] = ShardWork(shard, storage.join(raw_url, f"{unit}.tar"), keep_list,
                                    expected, storage.join(out_url, f"{unit}.parquet"))  # fmt: skip
        return plan, work, settings

    def run(self, raw_folder: str, filtered_folder: str, out_folder: str,
            on_shard_written=None):  # fmt: skip
        """Captions every shard without a caption record made with these settings; the report.

        Shards recorded with other settings are cleared first (record, then file), so the folder
        never holds captions of two settings.

        Args:
            on_shard_written: called as (shard, images) after each shard's record is written.
        """
        raw_url, filtered_url, out_url = map(str, (raw_folder, filtered_folder, out_folder))
        subset = caption_subset(self.job, filtered_url)
        plan, work, settings = self.plan(raw_url, filtered_url, out_url, subset)
        log = CompletionLog(out_url)
        start, images, kept, reasons = time.perf_counter(), 0, 0, Counter()
        for w in [w for w in work.values() if w.expected == 0]:
            write_sealed(log, out_url, w.shard, [], settings[shard_name(w.shard)])
            del work[w.shard]
        written = set()
        with tqdm(total=len(work), desc="caption shards", unit="shards") as progress:
            if work:
                import ray

                ds = self.dataset(list(work.values()), subset).map_batches(
                    CaptionWriter, batch_format="pyarrow", batch_size=None, num_cpus=0.1,
                    fn_constructor_args=(out_url, {s: w.expected for s, w in work.items()},
                                         {s: settings[shard_name(s)] for s in work}),
                    compute=ray.data.ActorPoolStrategy(size=1),
                )  # fmt: skip
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for shard, n, k in zip(batch["shard"], batch["images"], batch["kept"]):
                        written.add(int(shard))
                        images, kept = images + int(n), kept + int(k)
                        progress.update(1)
                        if on_shard_written is not None:
                            on_shard_written(int(shard), int(n))
        missing = sorted(set(work) - written)
        if missing:
            raise RuntimeError(f"shards ended incomplete (not all samples captioned): {missing}")
        for shard in written:
            reasons.update(log.read(shard_name(shard))["covered"]["rejected"])
        seconds = time.perf_counter() - start
        return {"shards": len(plan.todo), "skipped": len(plan.done), "stale": len(plan.stale),
                "images": images, "kept": kept, "rejected": dict(reasons),
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
