"""`evip check`: the whole campaign checked offline at full size before any GPU is spent.

Sources: each one's files, where they exist yet, must have the preset's columns (nothing is
downloaded; a source whose files are not there yet is listed as unchecked). Model: built on the
meta device from the LLM's config.json alone (a folder holding only config.json is enough).
Training: per stage, parameters, steps, samples and tokens, model-state and activation memory per
GPU and whether it fits `train.gpu_memory_gib` (`pipelines.train.fit_check`); a stage that does
not fit is refused with the fields to change.
"""

from __future__ import annotations

from flows.config import RunConfig
from flows.plan import _llm_config
from pipelines.markdown import human, table
from pipelines.sources import SourceError, source_files, validate_source
from pipelines.train.deepspeed_config import trains_in_bf16
from pipelines.train.fit_check import fix_for, model_size, stage_fit


class CheckFailed(ValueError):
    """The campaign cannot run as configured; the message names the fields to change."""


def source_lines(config: RunConfig) -> list[str]:
    """One line per source: its files' columns checked, or not there yet."""
    lines = []
    for source in config.sources:
        try:
            files = source_files(source)
        except SourceError:
            lines.append(f"- {source.name} ({source.preset}): no files yet at {source.paths}; "
                         "their columns are checked when they exist")  # fmt: skip
            continue
        validate_source(source)  # raises SourceError naming the missing columns
        lines.append(f"- {source.name} ({source.preset}): {len(files)} files, columns present")
    return lines


def check_markdown(config: RunConfig) -> str:
    """The check's report; raises `CheckFailed` when a stage cannot fit its GPUs."""
    import torch

    from model.from_llm import config_for

    model_config = config_for(_llm_config(config), config.model.experts, config.model.vision)
    data = {spec.name: spec for spec in config.stages.stages}
    weights = getattr(torch, config.model.dtype)  # what `evip model` builds the start in
    gpus, rows, failures = config.train.workers, [], []
    for index, stage in enumerate(config.train.stages):
        spec = data[stage.name]
        bf16 = trains_in_bf16(stage, "cuda", weights)
        fit = stage_fit(stage.name, model_size(model_config, stage.trainable), stage,
                        spec.max_patches, spec.text, gpus, config.train.gpu_memory_gib,
                        bf16=bf16)  # fmt: skip
        rows.append([stage.name, f"{human(fit.size.trainable)} / {human(fit.size.total)}",
                     f"{fit.steps:,}", human(fit.samples), human(fit.tokens),
                     f"ZeRO {stage.zero_stage}: {fit.states_gib:.1f}",
                     f"{fit.activations_gib:.1f} / {fit.activations_checkpointed_gib:.1f}",
                     stage.activation_checkpointing, "bf16" if bf16 else "fp32",
                     f"{fit.needed_gib:.1f}", "yes" if fit.fits else "**no**"])  # fmt: skip
        if not fit.fits:
            failures.append(fix_for(fit, index, stage))
    header = ["stage", "trainable / total", "steps", "samples", "tokens", "model states GiB",
              "activations GiB (none / full ckpt)", "checkpointing", "precision", "needed GiB",
              "fits"]  # fmt: skip
    report = "\n\n".join([
        "## sources", "\n".join(source_lines(config)) or "(none)",
        f"## training on {gpus} GPUs of {config.train.gpu_memory_gib:g} GiB",
        table(header, rows, "lrrrrrrllrl"),
    ])  # fmt: skip
    if failures:
        raise CheckFailed(report + "\n\n" + "\n".join(failures))
    return report
