"""A curriculum stage on real Ray Train workers running real DeepSpeed (CPU, gloo), tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.build import build_model
from model.options import ModelOptions, TinyLLMOptions, VisionOptions
from model.param_groups import group_of
from model.tiny import save_tiny_llm
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.model_folders import model_folder
from pipelines.train.job import train_stage
from pipelines.train.schedule import TrainOptions, TrainStage
from tests.pipelines.test_stage_loader import write_stage

MODEL = ModelOptions(tiny_llm=TinyLLMOptions(hidden_size=32, intermediate_size=64),
                     vision=VisionOptions(tile_size=56, vision_hidden_size=16, max_tiles=4))


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with an init checkpoint and a small S1.1 stage (shards + the stage's record)."""
    root = tmp_path_factory.mktemp("train")
    layout = RunLayout(root / "run")
    torch.manual_seed(0)
    model, tokenizer, processor = build_model(MODEL, save_tiny_llm(root / "llm", MODEL.tiny_llm))

    def save(local):
        model.save_pretrained(local)
        tokenizer.save_pretrained(local)
        processor.save_pretrained(local)

    model_folder(layout.checkpoints(), "init", {"model": "tiny"}, save, root / "cache")
    stage_folder = root / "run" / "stages" / "S1.1"
    urls = write_stage(stage_folder, shards=2, per_shard=4)
    shards = [{"name": u.rsplit("/", 1)[1][:-4], "samples": 4, "sha256": "-"} for u in urls]
    CompletionLog(layout.stages()).write("S1.1", {"built": "by hand"}, {"shards": shards})
    return layout


@pytest.mark.slow
def test_a_stage_trains_only_its_groups_and_hands_off_a_final_checkpoint(run, ray_local):
    layout = run
    stage = TrainStage(name="S1.1", trainable=["patch_embed", "visual_ffn"], steps=4,
                       global_batch=2, max_packed_tokens=192, checkpoint_every=2, zero_stage=1,
                       optimizer={"lr": 5e-3, "warmup_ratio": 0.0})  # fmt: skip
    options = TrainOptions(stages=[stage], workers=2, cpus_per_worker=0.5)
    start = storage.join(layout.checkpoints(), "init")
    report = train_stage(layout, options, stage, start, max_patches=24)
    final = report["final"]
    assert report["metrics"]["step"] == 4 and report["metrics"]["loss"] > 0
    before, after = _weights(layout_path(start)), _weights(layout_path(final))
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trained = {name for name in before if group_of(name) in stage.trainable}
    assert changed and changed <= trained  # every frozen tensor is bit-identical
    again = train_stage(layout, options, stage, start, max_patches=24)
    assert again == {"final": final, "metrics": {}}  # done: a no-op
    # Delta tuning: the optimiser holds state for the trainable parameters only.
    trainable = sum(before[name].numel() for name in trained)
    assert trainable < sum(t.numel() for t in before.values()) / 2
    last = sorted(Path(layout.path("train")).glob("S1.1-*/checkpoint_2*"))[-1]
    held = 0
    for rank in range(2):
        state = torch.load(last / "ds" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                           weights_only=False, map_location="cpu")["optimizer_state_dict"]
        held += sum(t.numel() for t in state["single_partition_of_fp32_groups"])
        held -= sum(state["group_paddings"])
    assert held == trainable


def layout_path(url: str) -> Path:
    return Path(url)
