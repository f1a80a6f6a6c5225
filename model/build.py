"""From the model section of a run config to a model, its tokenizer and its image processor."""

from __future__ import annotations

from pathlib import Path

import torch

from model.from_llm import from_llm
from model.options import ModelOptions
from model.preprocessing import MonoInternVLImageProcessor

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(options: ModelOptions, llm_path: str | Path):
    """Returns (model, tokenizer, image processor) for `options`, from the LLM at `llm_path`."""
    model, tokenizer = from_llm(
        llm_path,
        experts=options.experts,
        vision=options.vision,
        dtype=DTYPES[options.dtype],
        trust_remote_code=options.trust_remote_code,
    )
    return model, tokenizer, MonoInternVLImageProcessor.from_model_config(model.config)
