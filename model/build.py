"""From the model section of a run config to a model, its tokenizer and its image processor."""

from __future__ import annotations

from pathlib import Path

import torch

from model.from_llm import from_llm
from model.options import ModelOptions
from model.preprocessing import MonoInternVLImageProcessor
from model.tiny import save_tiny_llm

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_llm_path(options: ModelOptions, scratch_dir: str | Path) -> Path:
    """`options.llm_path`, or a tiny random LLM written once under `scratch_dir` (the demo)."""
    if options.llm_path is not None:
        return Path(options.llm_path)
    path = Path(scratch_dir) / f"tiny-{options.tiny_llm.family}-{options.tiny_llm.seed}"
    if not (path / "config.json").exists():
        save_tiny_llm(path, options.tiny_llm)
    return path


def build_model(options: ModelOptions, scratch_dir: str | Path):
    """Returns (model, tokenizer, image processor) for `options`."""
    model, tokenizer = from_llm(
        resolve_llm_path(options, scratch_dir),
        experts=options.experts,
        vision=options.vision,
        dtype=DTYPES[options.dtype],
    )
    return model, tokenizer, MonoInternVLImageProcessor.from_model_config(model.config)
