"""`evip plan`: the run's stages priced before any work (and the paper's setting, for scale)."""

from __future__ import annotations

import json

from flows.config import RunConfig
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.train.cost import CostOptions, cost_table, paper_costs, run_costs


def _llm_config(config: RunConfig) -> dict:
    """The start LLM's config.json (the tiny demo LLM's shape when none is given)."""
    if config.model.llm_path is not None:
        return json.loads(storage.read_bytes(storage.join(config.model.llm_path, "config.json")))
    tiny = config.model.tiny_llm
    return {"model_type": tiny.family, "vocab_size": tiny.vocab_size, **tiny.shape()}


def _samples(layout: RunLayout, spec) -> int | None:
    """Samples of a stage: built, configured, or not known until its inputs exist."""
    record = CompletionLog(layout.stages()).read(spec.name)
    if record is not None:
        return sum(s["samples"] for s in record["covered"]["shards"])
    return spec.samples


def plan_markdown(config: RunConfig, options: CostOptions, paper: bool = False) -> str:
    layout = RunLayout(config.run_root)
    stages = [(s.name, _samples(layout, s), s.max_patches, s.text) for s in config.stages.stages]
    costs, active = run_costs(_llm_config(config), config.model.experts, config.model.vision,
                              stages, options)  # fmt: skip
    unknown = [name for name, samples, _, _ in stages if samples is None]
    parts = ["## this run", cost_table(costs, active, options)]
    if unknown:
        parts.append(f"not priced yet (sample counts come from ingest): {', '.join(unknown)}; "
                     "set `stages.stages[i].samples` to price them now")  # fmt: skip
    if paper:
        costs, active = paper_costs(options)
        parts += ["## the paper's setting (Mono-InternVL-2B on InternLM2-1.8B)",
                  cost_table(costs, active, options)]  # fmt: skip
    return "\n\n".join(parts)
