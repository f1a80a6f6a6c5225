"""The recaption part of a run: every ingested source through the teacher, shard by shard."""

from __future__ import annotations

from pathlib import Path

from flows.config import RunConfig
from pipelines.ingest import filtered_folder, raw_folder
from pipelines.ray_runtime import ensure_ray
from recaption.job import RecaptionJob, report_table
from recaption.tiny_teacher import save_tiny_teacher


def teacher_path(config: RunConfig) -> str:
    """The configured checkpoint, or a tiny random InternVL written once under the run root."""
    if config.teacher.path is not None:
        return config.teacher.path
    path = Path(config.run_root) / "teacher" / "tiny-internvl"
    if not (path / "config.json").exists():
        save_tiny_teacher(path, max_tiles=config.teacher.max_tiles)
    return str(path)


def captions_folder(config: RunConfig, source_name: str) -> Path:
    return Path(config.run_root) / "captions" / config.teacher.name / source_name


def run_recaption(config: RunConfig) -> list[dict]:
    """Recaptions each source's kept samples; shards already captioned are skipped."""
    ensure_ray(config.ray)
    path = teacher_path(config)
    job = RecaptionJob(path, config.teacher, config.cleaning, config.recaption)
    wanted = set(config.recaption.sources) or {s.name for s in config.sources}
    reports = []
    for source in (s for s in config.sources if s.name in wanted):
        root = config.run_root
        report = job.run(raw_folder(root, source), filtered_folder(root, source),
                         captions_folder(config, source.name))  # fmt: skip
        print(f"\n## recaption {source.name} with {config.teacher.name}\n")
        print(report_table(report))
        reports.append({"source": source.name, **report})
    return reports
