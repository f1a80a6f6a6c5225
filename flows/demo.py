"""The demo as a source of inputs, not a branch of the steps: what a run with a synthetic web
makes for its steps, outside them.

The web is served while the steps that need it run (`served_synthetic_web`), its source files
written when it is first served; before `stages`, the S2 instruction data made from the
web's ground truth; before `evaluate`, the held-out probe. The driver (`flows.steps.run_steps`)
has `prepare_demo` run inside each step (`run_step`); a rerun finds each made.
"""

from __future__ import annotations

import contextlib

from flows.config import RunConfig
from pipelines import storage
from pipelines.layout import RunLayout
from pipelines.outputs import kept_shards
from pipelines.synthetic.catalog import write_source_files
from pipelines.synthetic.server import SyntheticWeb


@contextlib.contextmanager
def served_synthetic_web(config: RunConfig):
    """Serves the run's synthetic web (if any) and writes its source files once."""
    web_options = config.synthetic_web
    if web_options is None:
        yield None
        return
    web = SyntheticWeb(seed=web_options.seed, slow_seconds=web_options.slow_seconds,
                       port=web_options.port)  # fmt: skip
    with web:
        folder = RunLayout(config.run_root).source_files(web_options.source_name)
        if not storage.glob(storage.join(folder, "*.parquet")):
            write_source_files(web, web_options, folder)
        yield web


def written_by_the_demo(config: RunConfig, source: str) -> bool:
    """Whether `source`'s files are the synthetic web's (written by its first `evip ingest`)."""
    web = config.synthetic_web
    return web is not None and web.source_name == source


def demo_probe(config: RunConfig, layout: RunLayout) -> str | None:
    """The probe the demo draws from its synthetic web (None without one)."""
    return None if config.synthetic_web is None else layout.probe()


def _instructions(config: RunConfig, layout: RunLayout) -> None:
    """The demo's S2 data: conversations from the synthetic web's ground truth, written once
    where a conversations stage expects its meta JSON."""
    from pipelines.ray_runtime import ensure_ray
    from pipelines.synthetic.instructions import write_demo_instructions

    web = config.synthetic_web
    wanted = [s.meta for s in config.stages.stages if s.text == "conversations"]
    kept = kept_shards(layout, web.source_name)
    if not wanted or all(storage.exists(m) for m in wanted) or kept is None:
        return  # nothing to write, or not filtered yet (the stages step says so)
    ensure_ray(config.ray)
    meta = write_demo_instructions(layout, web.source_name, kept.shards)
    for path in wanted:
        if path != meta and not storage.exists(path):
            raise ValueError(f"stages: meta {path} does not exist (the demo writes {meta})")


def _probe(config: RunConfig, layout: RunLayout) -> None:
    """The held-out probe, when the run configures none of its own."""
    from pipelines.synthetic.probe import write_probe

    probe, web = demo_probe(config, layout), config.synthetic_web
    if config.evaluate.probe is None and not storage.exists(storage.join(probe, "text.parquet")):
        write_probe(probe, web.seed, config.evaluate.images, config.evaluate.texts)


PREPARE = {"stages": _instructions, "evaluate": _probe}
"""What the demo makes before a step, by step name."""


def prepare_demo(step_name: str, config: RunConfig) -> None:
    """Makes what the demo feeds step `step_name` (nothing for a run without a synthetic web)."""
    if config.synthetic_web is not None and step_name in PREPARE:
        PREPARE[step_name](config, RunLayout(config.run_root))
