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


TRAIN_SCRIPT = """
import sys
from pipelines.layout import RunLayout
from pipelines.ray_runtime import RayOptions, ensure_ray
from pipelines.train.job import train_stage
from pipelines.train.schedule import TrainOptions, TrainStage

if __name__ == "__main__":
    ensure_ray(RayOptions(num_cpus=2))
    stage = TrainStage.model_validate_json(sys.argv[2])
    options = TrainOptions(stages=[stage], workers=2, cpus_per_worker=0.5)
    layout = RunLayout(sys.argv[1])
    report = train_stage(layout, options, stage, layout.checkpoints() + "/init", max_patches=24)
    print("resumed_from", report["metrics"]["resumed_from"])
"""


def _copy_run(layout: RunLayout, target: Path) -> RunLayout:
    """A fresh run with the same init checkpoint and stage shards (nothing trained yet)."""
    import shutil

    source = Path(layout.root)
    for part in ("checkpoints/init", "checkpoints/_done", "stages"):
        shutil.copytree(source / part, target / part)
    for record in (target / "checkpoints" / "_done").glob("*.json"):
        if record.stem != "init":
            record.unlink()
    return RunLayout(target)


@pytest.mark.slow
def test_a_killed_stage_resumes_to_the_weights_of_an_uninterrupted_run(run, tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    # Enough checkpoints after the first that the kill lands mid-stage, not after the end.
    stage = TrainStage(name="S1.1", trainable=["patch_embed", "visual_ffn"], steps=12,
                       global_batch=2, max_packed_tokens=192, checkpoint_every=2,
                       optimizer={"lr": 5e-3, "warmup_ratio": 0.0})  # fmt: skip
    root = Path(__file__).parents[2]

    def train(layout, **popen):
        command = [sys.executable, "-c", TRAIN_SCRIPT, layout.root, stage.model_dump_json()]
        return subprocess.Popen(command, cwd=root, start_new_session=True, **popen)

    whole = _copy_run(run, tmp_path / "whole")
    uninterrupted = train(whole, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0 and "resumed_from 0" in output, output[-3000:]
    killed = _copy_run(run, tmp_path / "killed")
    first = train(killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage_folder = tmp_path / "killed" / "train"
    deadline = time.time() + 400

    def registered() -> bool:
        """Ray Train has recorded a checkpoint (a folder on disk alone is not resumed from)."""
        snapshots = list(storage_folder.glob("S1.1-*/checkpoint_manager_snapshot.json"))
        return bool(snapshots) and "checkpoint_dir_name" in snapshots[0].read_text()

    while time.time() < deadline and first.poll() is None and not registered():
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert registered(), "no checkpoint before the kill"
    assert not (tmp_path / "killed" / "checkpoints" / "S1.1" / "final").exists()
    resumed = train(killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    resumed_from = int(re.search(r"resumed_from (\d+)", output).group(1))
    assert resumed_from in (2, 4, 6, 8, 10), output[-3000:]  # from a checkpoint, mid-stage
    a = _weights(tmp_path / "whole" / "checkpoints" / "S1.1" / "final")
    b = _weights(tmp_path / "killed" / "checkpoints" / "S1.1" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
