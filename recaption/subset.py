"""Which kept samples the teacher captions when `recaption.samples` caps them (the paper
recaptions a 258M subset of the web for S1.2, not all of it).

Each sample is drawn by itself: it is captioned when a hash of (seed, sample id) falls under
samples / kept, kept counted over every filtered source from the filter's records. No sort and no
list of ids on the driver, the same subset on every rerun and in every Ray task, and about
`samples` captions in all (a Bernoulli draw: within a few sqrt(samples) of it).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.outputs import FILTER_UNIT, kept_shards_in
from pipelines.records import kept_count
from pipelines.stages.render import uniform
from recaption.options import RecaptionJobOptions

SALT = "recaption"


def drawn(seed: int, rate: float, sample_id: str) -> bool:
    """Whether the sample is in the subset of `rate` drawn with `seed` (a subset of a larger
    rate's with the same seed)."""
    return rate >= 1.0 or uniform(seed, SALT, sample_id) < rate


@dataclass(frozen=True)
class CaptionSubset:
    """The samples a capped recaption captions."""

    samples: int
    seed: int
    kept: int
    """Samples kept over every filtered source: what the cap is drawn from."""

    @property
    def rate(self) -> float:
        return min(1.0, self.samples / self.kept) if self.kept else 0.0

    def takes(self, sample_id: str) -> bool:
        return drawn(self.seed, self.rate, sample_id)

    @property
    def settings(self) -> dict:
        """Recorded in each caption shard's settings: another cap, seed or population redoes it."""
        return {"samples": self.samples, "seed": self.seed, "kept": self.kept}


def filtered_kept(filtered_url: str) -> int:
    """Samples kept over every source filtered together with the one in `filtered_url` (the
    filter runs over all of them at once and records each one's count beside its keep-lists);
    without a filter record, the keep-lists of `filtered_url` alone."""
    record = CompletionLog(filtered_url).read(FILTER_UNIT)
    if record is None:
        lists = storage.glob(storage.join(filtered_url, "[0-9]*.parquet"))
        return sum(kept_count(url) for url in lists)
    parent = filtered_url.rstrip("/").rsplit("/", 1)[0]  # filtered/<source> (spine.md)
    folders = [storage.join(parent, s) for s in record["settings"].get("sources", [])]
    return sum(kept.kept for kept in map(kept_shards_in, folders) if kept is not None)


def caption_subset(job: RecaptionJobOptions, filtered_url: str) -> CaptionSubset | None:
    """The subset `job.samples` asks for; None when every kept sample is captioned."""
    if job.samples is None:
        return None
    return CaptionSubset(job.samples, job.seed, filtered_kept(filtered_url))
