"""A curriculum stage on real Ray Train workers running real DeepSpeed (CPU, gloo), tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.build import build_model
from model.modeling import MonoInternVLForCausalLM
from model.official import load_official
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


def _hand_stage(layout: RunLayout, name: str, root: Path, shards: int, per_shard: int) -> None:
    """Stage shards written by hand, with the stage's record (what the stage builder leaves)."""
    urls = write_stage(root / "run" / "stages" / name, shards=shards, per_shard=per_shard)
    made = [{"name": u.rsplit("/", 1)[1][:-4], "samples": per_shard, "sha256": "-"} for u in urls]
    CompletionLog(layout.stages()).write(name, {"built": "by hand"}, {"shards": made})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with an init checkpoint and two stages of one sample per worker (a fixed batch)."""
    return make_run(tmp_path_factory.mktemp("train"), stages=("S1.1", "S1.2"))


def make_run(root: Path, stages: tuple[str, ...]) -> RunLayout:
    """A tiny init checkpoint and hand-written `stages` of one sample per worker, under `root`."""
    layout = RunLayout(root / "run")
    torch.manual_seed(0)
    model, tokenizer, processor = build_model(MODEL, save_tiny_llm(root / "llm", MODEL.tiny_llm))

    def save(local):
        model.save_pretrained(local)
        tokenizer.save_pretrained(local)
        processor.save_pretrained(local)

    model_folder(layout.checkpoints(), "init", {"model": "tiny"}, save, root / "cache")
    for stage in stages:
        _hand_stage(layout, stage, root, shards=2, per_shard=1)
    return layout


def _stage(name: str, trainable: list[str], zero: int, steps: int = 4, **more) -> TrainStage:
    return TrainStage(name=name, trainable=trainable, steps=steps, global_batch=2,
                      max_packed_tokens=192, checkpoint_every=2, zero_stage=zero,
                      optimizer={"lr": 3e-3, "warmup_ratio": 0.0}, **more)  # fmt: skip


def _train(layout, stage, start: str) -> dict:
    options = TrainOptions(stages=[stage], workers=2, cpus_per_worker=0.5)
    return train_stage(layout, options, stage, start, max_patches=24)


def _losses(report: dict) -> list[float]:
    lines = Path(report["logs"], "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["step"] for row in rows] == list(range(1, len(rows) + 1))
    losses = [row["loss"] for row in rows]
    # The same batch every step: the loss falls at every step (an optimiser that does nothing,
    # or one that trains frozen weights against their gradient, would not).
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    return losses


def _held_optimizer_state(layout: RunLayout, stage: str, zero: int) -> int:
    """Numbers of fp32 master weights the ranks' optimiser states hold (padding excluded)."""
    last = sorted(Path(layout.path("train")).glob(f"{stage}-*/checkpoint_20*"))[-1]
    held = 0
    for rank in range(2):
        state = torch.load(last / "ds" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
                           weights_only=False, map_location="cpu")["optimizer_state_dict"]
        if zero == 3:
            held += sum(t.numel() for t in state["fp32_flat_groups"])
        else:
            held += sum(t.numel() for t in state["single_partition_of_fp32_groups"])
            held -= sum(state["group_paddings"])
    return held


def _text_logits(folder) -> torch.Tensor:
    model = MonoInternVLForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=torch.arange(100, 132).unsqueeze(0)).logits


@pytest.fixture(scope="module")
def s11(run, ray_local):
    """S1.1 trained with ZeRO 1 on two workers from the init checkpoint."""
    stage = _stage("S1.1", ["patch_embed", "visual_ffn"], zero=1)
    return stage, _train(run, stage, storage.join(run.checkpoints(), "init"))


@pytest.mark.slow
def test_a_stage_trains_only_its_groups_and_hands_off_a_final_checkpoint(run, s11):
    layout, (stage, report) = run, s11
    start, final = layout.init_checkpoint(), report["final"]
    assert report["metrics"]["step"] == 4
    _losses(report)
    before, after = _weights(Path(start)), _weights(Path(final))
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trained = {name for name in before if group_of(name) in stage.trainable}
    assert changed == trained  # every frozen tensor is bit-identical, every trained one moved
    assert torch.equal(_text_logits(start), _text_logits(final))  # text path untouched
    again = _train(layout, stage, start)
    assert again == report  # done: a no-op that reports what the finished stage reported
    # Delta tuning: the optimiser holds state for the trainable parameters only.
    trainable = sum(before[name].numel() for name in trained)
    assert trainable < sum(t.numel() for t in before.values()) / 2
    assert _held_optimizer_state(layout, "S1.1", zero=1) == trainable
    # Milestones along the way, and the log: TensorBoard events, metrics, loss curve.
    assert [m["step"] for m in report["milestones"]] == [1, 2, 3, 4]
    for milestone in report["milestones"][:-1]:
        assert CompletionLog(layout.path("checkpoints", "S1.1")).read(
            milestone["weights"].rsplit("/", 1)[1])["settings"]["milestone"] == milestone["step"]
    assert list(Path(report["logs"], "tensorboard").glob("events.out.tfevents.*"))
    assert Path(report["logs"], "loss.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_next_stage_starts_from_the_last_final_with_its_own_groups_under_zero_3(run, s11):
    layout, (_, first) = run, s11
    stage = _stage("S1.2", ["patch_embed", "visual_ffn", "attention"], zero=3,
                   activation_checkpointing="full")  # recomputed layers under ZeRO-3
    report = _train(layout, stage, first["final"])
    _losses(report)
    before, after = _weights(Path(first["final"])), _weights(Path(report["final"]))
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trained = {name for name in before if group_of(name) in stage.trainable}
    assert changed == trained  # gathered from the ZeRO-3 shards; attention trained too
    assert any(group_of(name) == "attention" for name in changed)
    trainable = sum(before[name].numel() for name in trained)
    held = _held_optimizer_state(layout, "S1.2", zero=3)
    assert trainable <= held < trainable + 2 * 64 * len(trained)  # at most alignment padding
    # The official Mono-InternVL layout reloads to the same logits.
    hf = MonoInternVLForCausalLM.from_pretrained(report["final"]).eval()
    official = load_official(Path(report["final"], "official"))
    pixels, config = torch.rand(1, 3, 56, 56), hf.config
    span = [config.image_start_token_id, *[config.image_token_id] * 4, config.image_end_token_id]
    ids = torch.tensor([[100, 101, *span, 102, 103]])
    with torch.no_grad():
        assert torch.equal(hf(input_ids=ids, pixel_values=pixels).logits,
                           official(input_ids=ids, pixel_values=pixels).logits)  # fmt: skip


@pytest.mark.slow
def test_a_lost_worker_node_is_replaced_and_the_stage_resumes_from_its_checkpoint():
    """Ray Train restarts the worker group (FailureConfig) on a replacement node, from the last
    registered checkpoint, after the node running both workers is SIGKILLed (its own Ray
    cluster, in a subprocess: `train_node_loss_scenario.py`)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "tests.pipelines.train_node_loss_scenario"],
                            cwd=Path(__file__).parents[2], capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    out = result.stdout
    assert "node-removed: True" in out, out[-2000:] + result.stderr[-3000:]
    assert "steps: 8" in out and "losses-falling: True" in out, out[-2000:] + result.stderr[-3000:]
    resumed = int(out.split("resumed-from: ")[1].split()[0])
    assert resumed > 0 and result.returncode == 0  # resumed from a checkpoint, not from scratch


def test_use_gpu_auto_takes_gpus_when_the_cluster_has_them(monkeypatch):
    import ray

    from pipelines.train.job import _use_gpu

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    for gpus, expected in ((0, False), (2, True)):
        monkeypatch.setattr(ray, "cluster_resources", lambda g=gpus: {"CPU": 4, "GPU": g})
        assert _use_gpu(TrainOptions()) is expected
        assert _use_gpu(TrainOptions(use_gpu=False)) is False
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4})
    assert _use_gpu(TrainOptions()) is False and _use_gpu(TrainOptions(use_gpu=True)) is True


def _registered(storage_folder: Path, stage: str) -> bool:
    """Ray Train has recorded a checkpoint (a folder on disk alone is not resumed from)."""
    snapshots = list(storage_folder.glob(f"{stage}-*/checkpoint_manager_snapshot.json"))
    return bool(snapshots) and "checkpoint_dir_name" in snapshots[0].read_text()


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
