"""The curriculum schedule: validated up front, accumulation keeps the global batch, cosine LR,
DeepSpeed configs generated from the stage with the user's JSON merged."""

from __future__ import annotations

import pytest
import torch

from flows.config import ConfigError, load_run_config
from pipelines.train.deepspeed_config import deepspeed_config
from pipelines.train.schedule import TrainOptions, TrainStage


def test_global_batch_stays_fixed_when_workers_change():
    stage = TrainStage(name="S1.1", trainable=["visual_ffn"], global_batch=8, micro_batch=2)
    assert [stage.accumulation(w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match="multiple of micro_batch x workers"):
        stage.accumulation(3)
    with pytest.raises(ValueError, match=r"stages\[0\] \(S1.1\)"):
        TrainOptions(stages=[stage], workers=3)


def test_cosine_schedule_with_warmup():
    stage = TrainStage(name="S1.1", trainable=["visual_ffn"], steps=100,
                       optimizer={"lr": 1.0, "warmup_ratio": 0.1, "min_lr_ratio": 0.1})
    lrs = [stage.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # decays after warmup
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_deepspeed_config_from_the_stage_and_the_users_json():
    stage = TrainStage(name="S1.3", trainable=["attention"], global_batch=8, zero_stage=2,
                       deepspeed={"zero_optimization": {"overlap_comm": False}})
    config = deepspeed_config(stage, workers=2, device="cpu")
    assert config["gradient_accumulation_steps"] == 4 and config["train_batch_size"] == 8
    assert config["zero_optimization"] == {"stage": 2, "overlap_comm": False}
    assert config["bf16"]["enabled"] is False  # fp32 on CPU unless asked
    assert deepspeed_config(stage, 2, "cuda")["bf16"]["enabled"] is True
    # float32 weights keep their frozen path exact unless bf16 is asked for by name
    assert deepspeed_config(stage, 2, "cuda", torch.float32)["bf16"]["enabled"] is False
    named = stage.model_copy(update={"precision": "bf16"})
    assert deepspeed_config(named, 2, "cuda", torch.float32)["bf16"]["enabled"] is True
    bad = stage.model_copy(update={"deepspeed": {"optimizer": {"type": "Adam"}}})
    with pytest.raises(ValueError, match="optimizer/scheduler come from"):
        deepspeed_config(bad, 2, "cpu")
    bad = stage.model_copy(update={"deepspeed": {"train_batch_size": 6}})
    with pytest.raises(ValueError, match="train_batch_size 6"):
        deepspeed_config(bad, 2, "cpu")


def test_bad_schedules_fail_at_load_with_their_path():
    with pytest.raises(ConfigError, match=r"train.stages.0.trainable.*unknown parameter groups"):
        load_run_config("configs/demo.yaml",
                        ["train.stages=[{name: S1.1, trainable: [vision]}]"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"'S9' is not a data stage"):
        load_run_config("configs/demo.yaml", ["train.stages=[{name: S9, trainable: [norms]}]"])
    with pytest.raises(ConfigError, match="train.stages.0.zero_stage"):
        load_run_config("configs/demo.yaml",
                        ["train.stages=[{name: S1.1, trainable: [norms], zero_stage: 4}]"])


def test_memory_options_per_stage_and_gpus_by_the_cluster():
    from typing import get_args

    from model.packed_attention import BACKENDS

    stage = TrainStage(name="S2", trainable=["norms"])
    assert (stage.activation_checkpointing, stage.packed_attention) == ("none", "auto")
    assert set(get_args(TrainStage.model_fields["packed_attention"].annotation)) == set(BACKENDS)
    every = TrainStage(name="S2", trainable=["norms"], activation_checkpointing="every_n",
                       checkpoint_every_n_layers=3)  # fmt: skip
    assert every.checkpoint_every_n_layers == 3
    for field, bad in (("activation_checkpointing", "some"), ("packed_attention", "dense"),
                       ("checkpoint_every_n_layers", 0)):  # fmt: skip
        with pytest.raises(ConfigError, match=f"train.stages.0.{field}"):
            load_run_config("configs/demo.yaml",
                            [f"train.stages=[{{name: S1.1, trainable: [norms], {field}: {bad}}}]"])
    with pytest.raises(ConfigError, match=r"stages \['S1.1'\]: packed_attention flex and "
                       "flash_varlen train on GPUs only"):  # fmt: skip
        load_run_config("configs/demo.yaml", ["train.use_gpu=false", "train.stages=[{name: S1.1, "
                                              "trainable: [norms], packed_attention: flex}]"])
    assert TrainOptions().use_gpu == "auto"
    assert TrainOptions.model_validate({"use_gpu": "true"}).use_gpu is True
    with pytest.raises(ConfigError, match="train.use_gpu"):
        load_run_config("configs/demo.yaml", ["train.use_gpu=maybe"])
