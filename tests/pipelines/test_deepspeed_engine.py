"""A stage's DeepSpeed engine in one process, driven by the trainer: ZeRO 2, activation
checkpointing and the packed attention `auto` picks. On the CPU (gloo, float32) and, where there
is one, on a CUDA GPU (NCCL, bf16): the path of a GPU worker, without Ray around it."""

from __future__ import annotations

import math

import pytest
import torch

from model.packed_attention import resolve_backend
from pipelines.train.loop import _no_inference_all_reduce_op, engine_for
from pipelines.train.schedule import TrainStage
from pipelines.train.trainer import Trainer, TrainState
from tests.conftest import _free_port, tiny_model
from tests.model.test_packed_attention import PAD, packed_batch
from tests.pipelines.test_trainer import Steps


@pytest.fixture
def one_rank(monkeypatch):
    """The environment a launcher gives a single worker (DeepSpeed places the model by it)."""
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
])  # fmt: skip
def test_a_stage_trains_on_its_deepspeed_engine(one_rank, device):
    """Four steps over one pack of image and text samples: the loss falls, frozen weights stay
    bit-for-bit, trained ones move, in the precision `auto` gives the device."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != device:  # DeepSpeed picks its device itself
        pytest.skip(f"DeepSpeed's accelerator here is {get_accelerator().device_name()}")
    if device == "cpu":
        _no_inference_all_reduce_op()
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")
    model = tiny_model(visual_attention_experts=True, head_dim=16)  # compiled flex: >= 16
    if device == "cuda":
        model = model.bfloat16()  # a 16-bit checkpoint, as the paper's
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stage = TrainStage(name="S1.3", trainable=["patch_embed", "visual_ffn", "visual_attention"],
                       steps=4, global_batch=1, zero_stage=2, activation_checkpointing="full",
                       optimizer={"lr": 3e-3, "warmup_ratio": 0.0})  # fmt: skip
    engine, optimizer = engine_for(model, stage, 1, device)
    assert engine.device.type == device
    assert engine.module.dtype == (torch.bfloat16 if device == "cuda" else torch.float32)
    backend = resolve_backend("auto", engine.device, engine.module.dtype, training=True)
    assert backend in (("per_sample",) if device == "cpu" else ("flash_varlen", "flex"))

    batch = packed_batch()
    pack = {**batch, "attention_mask": (batch["input_ids"] != PAD).long(),
            "loss_weights": (batch["labels"] != -100).float()}

    def same_pack():
        while True:
            yield pack

    steps = Steps()
    Trainer(engine, optimizer, stage, 1, [steps]).fit(same_pack(), TrainState())
    assert steps.finished
    losses = [m["loss"] for m in steps.metrics]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    assert all(m["grad_norm"] is not None and m["grad_norm"] > 0 for m in steps.metrics)
    trained = {n for n, p in engine.module.named_parameters() if p.requires_grad}
    assert trained == {n for n in before if ".visual_" in n or ".vision." in n}
    for name, param in engine.module.named_parameters():
        same = torch.equal(param.detach().cpu(), before[name])
        assert same != (name in trained), f"{name}: {'unchanged' if same else 'changed'}"
