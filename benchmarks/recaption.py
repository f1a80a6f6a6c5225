"""Recaption on Ray Data vs a bare loop calling the same teacher, same images, same batch size.

Steady state on both sides: the loop is timed after a warm-up batch (model already loaded); the
Ray job is timed from its first finished shard to its last (actors started, models loaded), and
counts only the images of the shards after the first. Each side runs ~20 s by default.
Last line: `recaption_vs_bare: <images/s of the job ÷ images/s of the loop>`.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import webdataset as wds

from pipelines.filter import KEEP_LIST_SCHEMA
from pipelines.ray_runtime import RayOptions, ensure_ray
from pipelines.synthetic.scenes import make_scene, render
from recaption.job import RecaptionJob
from recaption.options import (
    CleaningOptions,
    GenerationOptions,
    RecaptionJobOptions,
    TeacherOptions,
)
from recaption.prompts import prompt_for
from recaption.teacher import TeacherInputs, TransformersTeacher, decode_image
from recaption.tiny_teacher import save_tiny_teacher


def _write_shards(root: Path, shards: int, per_shard: int) -> list[bytes]:
    (root / "raw").mkdir(parents=True)
    (root / "filtered").mkdir()
    images = []
    for shard in range(shards):
        rows = []
        with wds.TarWriter(str(root / "raw" / f"{shard:05d}.tar")) as tar:
            for i in range(per_shard):
                buffer = io.BytesIO()
                render(make_scene(3, shard * per_shard + i)).save(buffer, format="JPEG")
                key, sid = f"{shard:05d}{i:04d}", f"{shard:08x}{i:08x}"
                tar.write({"__key__": key, "jpg": buffer.getvalue(), "txt": "alt",
                           "json": json.dumps({"key": key})})  # fmt: skip
                rows.append({"key": key, "sample_id": sid, "keep": True, "reason": None})
                images.append((buffer.getvalue(), sid))
        pq.write_table(pa.Table.from_pylist(rows, schema=KEEP_LIST_SCHEMA),
                       root / "filtered" / f"{shard:05d}.parquet")  # fmt: skip
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shards", type=int, default=24)
    parser.add_argument("--per-shard", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256, help="teacher LLM width")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of the teacher, on both sides")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp())
    teacher_path = str(save_tiny_teacher(root / "teacher", max_tiles=2, hidden_size=args.hidden,
                                         layers=4))  # fmt: skip
    options = TeacherOptions(path=teacher_path, max_tiles=2, generation=GenerationOptions(
        max_new_tokens=args.new_tokens, repetition_penalty=1.0))  # fmt: skip
    images = _write_shards(root, args.shards, args.per_shard)

    inputs, teacher = (
        TeacherInputs(teacher_path, options),
        TransformersTeacher(teacher_path, options),
    )

    def bare_batch(batch):
        samples = [inputs.prepare(decode_image(data), prompt_for(sid, options.prompts))
                   for data, sid in batch]  # fmt: skip
        teacher.generate(samples)

    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    bare_batch(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        bare_batch(batch)
    bare_rate = sum(len(b) for b in batches[1:]) / (time.perf_counter() - start)

    ensure_ray(RayOptions(num_cpus=2))
    job = RecaptionJob(teacher_path, options, CleaningOptions(),
                       RecaptionJobOptions(batch_size=args.batch_size, torch_threads=args.threads,
                                           preprocess_batch_size=args.batch_size))  # fmt: skip
    finished: list[tuple[float, int]] = []
    job.run(
        root / "raw",
        root / "filtered",
        root / "captions",
        on_shard_written=lambda shard, n: finished.append((time.perf_counter(), n)),
    )
    ray_rate = sum(n for _, n in finished[1:]) / (finished[-1][0] - finished[0][0])

    print(
        f"bare loop:     {bare_rate:7.1f} images/s ({len(images)} images, batch {args.batch_size})"
    )
    print(f"Ray Data job:  {ray_rate:7.1f} images/s (steady state, {len(finished)} shards)")
    print(f"recaption_vs_bare: {ray_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()
