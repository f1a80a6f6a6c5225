"""The run layout: every path of a run, derived from its root (docs/spine.md).

```
<root>/sources/<source>/*.parquet                 the synthetic web's source files (demo)
<root>/raw/<source>/_plan/NNNNN.parquet           source file NNNNN normalised + metadata-filtered
<root>/raw/<source>/_shards/NNNNN.feather         img2dataset's input slice of shard NNNNN
<root>/raw/<source>/NNNNN.{tar,parquet}           img2dataset's shard (+ _stats.json)
<root>/filtered/<source>/NNNNN.parquet            keep-list of raw shard NNNNN
<root>/captions/<teacher>/<source>/NNNNN.parquet  teacher captions of raw shard NNNNN
<root>/stages/<stage>/shard-NNNNNN.tar            curriculum stage shards (+ _index/)
<root>/instructions/meta.json                     S2 instruction data (the demo's is made here)
<root>/checkpoints/<name>/  <root>/llm/<name>/  <root>/teacher/<name>/   model folders
<root>/reports/                                   figures and tables (train/<stage>/: its logs)
```
Each output folder has `_done/` with the completion records of its units
(`pipelines/completion.py`). The root may be a local path or any fsspec URL; what must be local
(a checkpoint transformers loads) is mirrored into a local cache folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipelines import storage

SHARD_DIGITS = 5  # img2dataset's oom_shard_count: shard names are NNNNN


def shard_name(shard: int) -> str:
    return f"{shard:0{SHARD_DIGITS}d}"


def shard_of(url: str) -> int:
    """The shard number of a shard file's URL (`.../00012.parquet` -> 12)."""
    return int(url.rsplit("/", 1)[1].split(".")[0].split("_")[0])


class RawFolder:
    """One source's raw folder: img2dataset's shards plus what plans and feeds them."""

    def __init__(self, url: str):
        self.url = str(url)

    def shard(self, shard: int, ext: str) -> str:
        """`ext`: tar, parquet or _stats.json (img2dataset's names)."""
        sep = "" if ext.startswith("_") else "."
        return storage.join(self.url, f"{shard_name(shard)}{sep}{ext}")

    def plan(self) -> str:
        return storage.join(self.url, "_plan")

    def plan_file(self, file_index: int) -> str:
        return storage.join(self.plan(), f"{shard_name(file_index)}.parquet")

    def shard_input(self, shard: int) -> str:
        return storage.join(self.url, "_shards", f"{shard_name(shard)}.feather")

    def repair(self, round_number: int) -> str:
        return storage.join(self.url, "_repair", f"{round_number:03d}")

    def repair_input(self, round_number: int, shard: int) -> str:
        return storage.join(self.repair(round_number), f"{shard_name(shard)}.parquet")


class RunLayout:
    """Paths of one run under `root` (a local path or an fsspec URL)."""

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None):
        root = str(root)
        self.root = root if not storage.is_local(root) else str(Path(root).absolute())
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:12]
        default_cache = Path(os.environ.get("EVIP_CACHE", Path.home() / ".cache" / "evip"))
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache / digest

    def path(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    # ingest
    def source_files(self, source: str) -> str:
        return self.path("sources", source)

    def raw(self, source: str) -> str:
        return self.path("raw", source)

    def raw_folder(self, source: str) -> RawFolder:
        return RawFolder(self.raw(source))

    def filtered(self, source: str) -> str:
        return self.path("filtered", source)

    def keep_list(self, source: str, shard: int) -> str:
        return storage.join(self.filtered(source), f"{shard_name(shard)}.parquet")

    # recaption
    def captions(self, teacher: str, source: str) -> str:
        return self.path("captions", teacher, source)

    def caption_shard(self, teacher: str, source: str, shard: int) -> str:
        return storage.join(self.captions(teacher, source), f"{shard_name(shard)}.parquet")

    # curriculum and models
    def stages(self, stage: str | None = None) -> str:
        return self.path("stages", stage) if stage else self.path("stages")

    def stage_shard(self, stage: str, name: str) -> str:
        """A stage's webdataset shard `name` (shard-NNNNNN)."""
        return storage.join(self.stages(stage), f"{name}.tar")

    def checkpoints(self, stage: str | None = None) -> str:
        """Every checkpoint's record (`init`, each stage's `final`); a stage's own folder."""
        return self.path("checkpoints", stage) if stage else self.path("checkpoints")

    def init_checkpoint(self) -> str:
        """The untrained Mono-InternVL built from the start LLM (`evip model`)."""
        return self.path("checkpoints", "init")

    def train_runs(self) -> str:
        """Ray Train's storage: one run per stage and settings, its checkpoints inside."""
        return self.path("train")

    def instructions(self) -> str:
        """Instruction data the run makes itself (the demo's S2 conversations)."""
        return self.path("instructions")

    def probe(self) -> str:
        """The held-out probe the run draws itself (the demo's)."""
        return self.path("eval", "probe")

    def evaluations(self) -> str:
        """Every checkpoint's held-out figures and their records."""
        return self.path("reports", "eval")

    def filter_scratch(self) -> str:
        """The filter's shuffle buckets while it deduplicates across sources."""
        return self.path("filtered", "_shuffle")

    def stage_checkpoint(self, stage: str, name: str = "final") -> str:
        """A stage's exported weights: `final`, or a data milestone's folder."""
        return storage.join(self.checkpoints(stage), name)

    def llm(self) -> str:
        return self.path("llm")

    def teacher(self) -> str:
        return self.path("teacher")

    def reports(self) -> str:
        return self.path("reports")

    def train_logs(self, stage: str) -> str:
        """A training stage's logs (TensorBoard events, metrics.jsonl, loss.png)."""
        return self.path("reports", "train", stage)

    def report(self, name: str) -> str:
        return self.path("reports", name)

    def run_config(self) -> str:
        return self.path("run_config.yaml")

    def local_cache(self, *parts: str) -> Path:
        """A local folder for what must be local (model folders when the root is remote)."""
        return self.cache_dir.joinpath(*parts)

    def local_report(self, name: str) -> Path:
        """Where a report file is drawn before it is stored at `report(name)`."""
        return Path(self.report(name)) if storage.is_local(self.root) else self.local_cache(
            "reports", name
        )
