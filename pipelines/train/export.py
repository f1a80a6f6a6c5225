"""A training engine's weights as a Hugging Face folder, recorded as complete (`model_folders`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def export_weights(engine, tokenizer, processor, rank: int, parent: str, name: str,
                   settings: dict) -> None:  # fmt: skip
    """The engine's weights as a Hugging Face folder `parent/name`, recorded as complete.

    Every rank calls it: under ZeRO-3 the parameters are gathered from all ranks first; rank 0
    writes. A model the official Mono-InternVL layout can hold (`official_layout_fits`) is also
    written in it (`official/`), which the released code loads.
    """
    import deepspeed

    from model.official import official_layout_fits, save_official
    from pipelines.model_folders import model_folder

    model = engine.module
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
              if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())  # fmt: skip
    with gather:
        if rank != 0:
            return

        def save(local: Path) -> None:
            # The stage's attention backend is how it ran, not what the weights are: a folder
            # trained with flash-attn varlen must still load and run on a CPU.
            backend, model.config.packed_attention = model.config.packed_attention, "auto"
            try:
                model.save_pretrained(local)
            finally:
                model.config.packed_attention = backend
            tokenizer.save_pretrained(local)
            processor.save_pretrained(local)
            if official_layout_fits(model.config):
                save_official(model, local / "official", tokenizer)

        model_folder(parent, name, settings, save, Path(tempfile.mkdtemp()) / name)
    os.sync()
