"""The loop each Ray Train worker runs for one curriculum stage: DeepSpeed over the MMoE model.

Only the stage's parameter groups train; the optimiser is built over them alone, so frozen
weights get neither gradients nor optimiser state (delta tuning). The stage's memory options
(activation checkpointing, packed attention) are set on the model before DeepSpeed wraps it.
Packs are prefetched in a background thread (`Prefetcher`). The `Trainer` runs forward ->
backward -> step; its callbacks checkpoint (weights, optimiser, loader position, RNG, step: a
(re)started worker resumes from `ray.train.get_checkpoint()` with the batches an uninterrupted
run would see), export the weights at the stage's data milestones and at the end (`final/`),
keep rank 0's log (`train_log`) and report to Ray Train.
"""

from __future__ import annotations

import torch

PREFETCH_PACKS = 4
"""Packs loaded ahead of the step (bounded: each holds its tiles in memory)."""


def train_loop(config: dict) -> None:
    """Ray Train's per-worker function; `config` comes from `pipelines.train.job`."""
    import deepspeed
    import ray.train

    from pipelines.loader.prefetch import Prefetcher
    from pipelines.loader.stage_loader import StageLoader
    from pipelines.train.callbacks import (
        Checkpointer,
        MetricsLog,
        MilestoneExporter,
        Reporter,
        restore,
    )
    from pipelines.train.schedule import TrainStage
    from pipelines.train.trainer import Trainer

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    stage = TrainStage.model_validate(config["stage"])
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = "cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu"
    if device == "cpu":
        _no_inference_all_reduce_op()
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")

    engine, optimizer, tokenizer, processor = _engine(config["start"], stage, world, device)
    loader = StageLoader(config["shards"], tokenizer, processor, max_patches=config["max_patches"],
                         max_tokens=stage.max_packed_tokens, rank=rank, world=world,
                         seed=config["seed"], epochs=None, loss_reduction=stage.loss_reduction,
                         report=lambda message: print(f"[rank {rank}] {message}"))  # fmt: skip
    with Prefetcher(loader, depth=PREFETCH_PACKS) as packs:
        state = restore(engine, packs, rank)
        log = MetricsLog(config["logs"], stage, state) if rank == 0 else None
        callbacks = [
            *([log] if log else []),
            MilestoneExporter(engine, tokenizer, processor, rank, stage, config["folder"],
                              config["final_settings"]),
            Checkpointer(engine, packs, rank, stage, sync=log.sync if log else None),
            Reporter(stage.report_every),
        ]  # fmt: skip
        Trainer(engine, optimizer, stage, world, callbacks).fit(packs, state)


def _no_inference_all_reduce_op() -> None:
    """On CPU, starting DeepSpeed's communication backend JIT-compiles its shared-memory
    all-reduce, which only DeepSpeed's inference engine calls (`inference_all_reduce`): 35-95 s
    in a stage's start whenever its build cache is not this process's (a fresh machine, another
    checkout). Training never calls it, so it is marked incompatible and not built (DeepSpeed
    keeps edits to `deepspeed.ops.__compatible_ops__`); gloo does the gradients' all-reduce."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _engine(start_url: str, stage, world: int, device: str):
    """The start checkpoint under DeepSpeed with the stage's trainable groups and options.

    Returns:
        (engine, optimizer, tokenizer, processor)
    """
    from model.from_llm import load_tokenizer
    from model.modeling import MonoInternVLForCausalLM
    from model.preprocessing import MonoInternVLImageProcessor
    from pipelines.model_folders import local_model_folder

    start = local_model_folder(start_url)
    model = MonoInternVLForCausalLM.from_pretrained(start)
    tokenizer = load_tokenizer(start)  # a broken start folder fails before DeepSpeed starts
    processor = MonoInternVLImageProcessor.from_pretrained(start)
    engine, optimizer = engine_for(model, stage, world, device)
    return engine, optimizer, tokenizer, processor


def engine_for(model, stage, world: int, device: str):
    """`model` under DeepSpeed as `stage` trains it: its trainable groups, activation
    checkpointing, AdamW over the trainable parameters, ZeRO and precision, packed attention.

    Returns:
        (engine, optimizer)
    """
    import deepspeed

    from model.param_groups import set_trainable
    from pipelines.train.deepspeed_config import deepspeed_config

    set_trainable(model, stage.trainable)
    model.set_activation_checkpointing(stage.activation_checkpointing,
                                       stage.checkpoint_every_n_layers)  # fmt: skip
    model.train()
    opt = stage.optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.lr, betas=opt.betas,
                                  weight_decay=opt.weight_decay)  # fmt: skip
    config = deepspeed_config(stage, world, device, model.dtype)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    # Checked on the device, dtype and mode DeepSpeed gave the model (flash-attn varlen needs
    # 16-bit CUDA, flex trains on CUDA only).
    engine.module.set_packed_attention(stage.packed_attention)
    if world == 1 and stage.zero_stage == 0:
        engine.enable_backward_allreduce = False  # one worker: no gradients to average
    return engine, optimizer
