"""The trainer on one gloo process with a stand-in engine: forward -> backward -> step over
prefetched packs, the metrics it has always logged, one Ray Train report per step at most, and
checkpoints holding the loader's state after the last pack consumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.loader.prefetch import Prefetcher
from pipelines.train.callbacks import LOADER_STATE, Checkpointer, Reporter
from pipelines.train.schedule import TrainStage
from pipelines.train.trainer import Callback, Trainer, TrainState
from tests.conftest import tiny_model

METRICS = ["step", "loss", "lr", "grad_norm", "tokens", "samples_seen", "packing_efficiency",
           "step_seconds", "wall_seconds", "report_seconds", "tokens_per_s",
           "mean_step_seconds", "resumed_from"]  # fmt: skip


class Engine:
    """What the trainer asks of DeepSpeed's engine, over a plain model and AdamW."""

    def __init__(self, model):
        self.module, self.device, self.calls = model, torch.device("cpu"), []
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def __call__(self, **inputs):
        self.calls.append("forward")
        return self.module(**inputs)

    def backward(self, loss):
        self.calls.append("backward")
        loss.backward()

    def step(self):
        self.calls.append("step")
        self.optimizer.step()
        self.optimizer.zero_grad()

    def get_global_grad_norm(self):
        return 1.0

    def save_checkpoint(self, folder, tag):
        Path(folder, tag).mkdir()


class Packs:
    """Text-only packs of 24 tokens (16 real), resumable by count."""

    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def __iter__(self):
        while True:
            generator = torch.Generator().manual_seed(self.n)
            ids = torch.randint(8, 64, (1, 24), generator=generator)
            labels = ids.clone()
            labels[:, :8] = labels[:, 16:] = -100
            real = torch.tensor([[1] * 16 + [0] * 8])
            self.n += 1
            yield {"input_ids": ids, "labels": labels, "position_ids": torch.arange(24)[None],
                   "sample_ids": torch.tensor([[0] * 8 + [1] * 8 + [2] * 8]),
                   "attention_mask": real, "loss_weights": (labels != -100).float(),
                   "pixel_values": None}  # fmt: skip


class Steps(Callback):
    def __init__(self):
        self.metrics, self.finished = [], False

    def post_step(self, state, metrics):
        self.metrics.append(metrics)

    def post_train(self, state):
        self.finished = True


@pytest.fixture
def one_process(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0,
                                         world_size=1)  # fmt: skip
    yield
    torch.distributed.destroy_process_group()


def test_steps_report_once_and_checkpoint_the_consumed_loader_state(one_process, monkeypatch):
    import ray.train

    reports = []

    def report(metrics, checkpoint=None):
        saved = checkpoint and json.loads(Path(checkpoint.path, LOADER_STATE.format(rank=0))
                                          .read_text())  # fmt: skip
        reports.append((metrics["step"], saved))

    monkeypatch.setattr(ray.train, "report", report)
    stage = TrainStage(name="S2", trainable=["norms"], steps=4, global_batch=2,
                       checkpoint_every=3, report_every=2,
                       optimizer={"lr": 1e-3, "warmup_ratio": 0.0})  # fmt: skip
    engine, steps = Engine(tiny_model().train()), Steps()
    with Prefetcher(Packs(), depth=3) as packs:
        callbacks = [steps, Checkpointer(engine, packs, 0, stage), Reporter(stage.report_every)]
        Trainer(engine, engine.optimizer, stage, 1, callbacks).fit(packs, TrainState())
    assert engine.calls == ["forward", "backward", "step"] * 8  # 2 packs a step, 4 steps
    assert [list(m) for m in steps.metrics] == [METRICS] * 4 and steps.finished
    assert [m["samples_seen"] for m in steps.metrics] == [4, 8, 12, 16]  # 2 samples a pack
    assert steps.metrics[0]["packing_efficiency"] == pytest.approx(16 / 24)
    assert [step for step, _ in reports] == [2, 3, 4]  # step 4: with its checkpoint, once
    assert reports[0][1] is None
    for step, saved in reports[1:]:
        assert saved["loader"] == {"n": 2 * step}  # not where the thread had got to
        assert saved["step"] == step and saved["samples_seen"] == 4 * step
        assert "cuda_rng" not in saved and len(saved["torch_rng"]) > 0
