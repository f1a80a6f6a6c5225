"""A curriculum stage is data: its sources and weights, the text it trains on, its prompts, its
maximum patches. The builder and the trainer read these fields and never branch on a stage's name.

Paper §3.2: S1.1 concept learning (alt-text, one fixed prompt, ≤1,280 patches), S1.2 semantic
learning (teacher captions, ≤1,792), S1.3 alignment learning (captioning 53.9% / detection 5.2% /
OCR 40.9% with task prompts, ≤3,328), S2 instruction tuning (conversations, ≤6,400).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from model.options import FrozenOptions

CONCEPT_PROMPT = "provide a one-sentence caption for the image"
TASKS = ("caption", "grounding", "ocr")


class StageSource(FrozenOptions):
    """One source of a stage and its share of the stage's samples."""

    name: str
    """A source of the run."""
    weight: float = Field(1.0, gt=0)
    """Relative share of the stage's samples drawn from this source."""


class StageSpec(FrozenOptions):
    """One curriculum stage's data."""

    name: str
    """Stage name, used in paths (stages/<name>/)."""
    text: Literal["alt_text", "teacher_caption", "tasks", "conversations"]
    """What the answer is: the alt-text, the teacher caption, a task of `tasks`, or the
    conversations of instruction data (`meta`)."""
    sources: list[StageSource] = []
    """Sources and weights; empty: every source of the run, equal weights."""
    prompt: str = CONCEPT_PROMPT
    """The question for `alt_text` and `teacher_caption` stages."""
    tasks: dict[Literal["caption", "grounding", "ocr"], float] = {}
    """Share of each task for `tasks` stages (captioning, grounding, OCR)."""
    max_patches: int = Field(1280, gt=0)
    """Most image patches (28×28 px visual tokens) per sample in this stage."""
    meta: str | None = None
    """An InternVL-style meta JSON of instruction datasets (LLaVA JSONL): all a `conversations`
    stage trains on, or what a `tasks` stage mixes in at `meta_share` (grounding and OCR
    datasets in the paper's S1.3)."""
    meta_share: float | None = Field(None, gt=0, lt=1)
    """Share of a `tasks` stage's samples drawn from `meta`'s datasets; the web's samples take the
    rest, split by `tasks`."""
    samples: int | None = Field(None, gt=0)
    """Samples in the stage; None: as many as the weights allow without reusing any."""
    samples_per_shard: int = Field(1000, gt=0)
    """Samples per stage shard (the last one may be short)."""
    seed: int = 0
    """Seed of the sampling and of the shuffle across sources."""

    @model_validator(mode="after")
    def _check(self) -> StageSpec:
        if self.text == "tasks" and (not self.tasks or sum(self.tasks.values()) <= 0):
            raise ValueError("a `tasks` stage needs `tasks` with positive shares")
        if self.text != "tasks" and self.tasks:
            raise ValueError(f"`tasks` only applies to text: tasks (this stage: {self.text})")
        if self.text == "conversations" and self.meta is None:
            raise ValueError("a `conversations` stage needs `meta`")
        if self.text in ("alt_text", "teacher_caption") and self.meta is not None:
            raise ValueError(f"`meta` goes with text: conversations or tasks (this stage: "
                             f"{self.text})")  # fmt: skip
        if (self.text == "tasks" and self.meta is not None) != (self.meta_share is not None):
            raise ValueError("a `tasks` stage mixes `meta` in at `meta_share`: give both or "
                             "neither")  # fmt: skip
        if any(v < 0 for v in self.tasks.values()):
            raise ValueError("task shares must be >= 0")
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError(f"stage sources repeat: {names}")
        return self

    def weights(self, run_sources: list[str]) -> dict[str, float]:
        """{source: share} summing to 1."""
        chosen = {s.name: s.weight for s in self.sources} or {n: 1.0 for n in run_sources}
        total = sum(chosen.values())
        return {name: weight / total for name, weight in chosen.items()}


DEFAULT_STAGES = [
    StageSpec(name="S1.1", text="alt_text", max_patches=1280),
    StageSpec(name="S1.2", text="teacher_caption", max_patches=1792),
    StageSpec(name="S1.3", text="tasks", max_patches=3328,
              tasks={"caption": 0.539, "grounding": 0.052, "ocr": 0.409}),
]  # fmt: skip


class StageShardOptions(FrozenOptions):
    """The curriculum's data stages (S2 conversations come from instruction data, later)."""

    stages: list[StageSpec] = DEFAULT_STAGES
    """Stages in curriculum order."""
    shuffle_buckets_rows: int = Field(20_000, gt=0)
    """Samples per shuffle bucket when the builder spreads samples over stage shards."""

    @model_validator(mode="after")
    def _check(self) -> StageShardOptions:
        names = [s.name for s in self.stages]
        if len(names) != len(set(names)):
            raise ValueError(f"stage names repeat: {names}")
        patches = [s.max_patches for s in self.stages]
        if patches != sorted(patches):
            raise ValueError(f"max_patches must not shrink along the curriculum: {patches}")
        return self
