"""The loop each Ray Train worker runs for one curriculum stage: DeepSpeed over the MMoE model.

Only the stage's parameter groups train; the optimiser is built over them alone, so frozen
weights get neither gradients nor optimiser state (delta tuning). Every `checkpoint_every` steps
each rank writes its DeepSpeed shard and its loader state into one Ray Train checkpoint; on a
(re)start the worker resumes from `ray.train.get_checkpoint()`: weights, optimiser, loader
position and step, so the batches after a resume are the ones an uninterrupted run would see.
The stage's weights are exported in Hugging Face format at its data milestones and at the end
(`final/`), gathered from every rank under ZeRO-3; rank 0 keeps the log (`train_log`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

LOADER_STATE = "loader-rank{rank}.json"


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor):
    """Next-token loss, each learned token weighted (per-token mean or square-root averaging)."""
    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:].to(logits.dtype)
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                             ignore_index=-100, reduction="none")  # fmt: skip
    flat = weights.reshape(-1).float()
    return (losses * flat).sum() / flat.sum().clamp_min(1e-8)


def _stack(packs: list[dict]) -> dict:
    keys = ("input_ids", "labels", "position_ids", "sample_ids", "loss_weights", "attention_mask")
    batch = {k: torch.cat([p[k] for p in packs]) for k in keys}
    tiles = [p["pixel_values"] for p in packs if p["pixel_values"] is not None]
    batch["pixel_values"] = torch.cat(tiles) if tiles else None
    return batch


def train_loop(config: dict) -> None:
    """Ray Train's per-worker function; `config` comes from `pipelines.train.job`."""
    import deepspeed
    import ray.train
    from transformers import AutoTokenizer

    from model.modeling import MonoInternVLForCausalLM
    from model.param_groups import set_trainable
    from model.preprocessing import MonoInternVLImageProcessor
    from pipelines.loader.stage_loader import StageLoader
    from pipelines.model_folders import local_model_folder
    from pipelines.train.deepspeed_config import deepspeed_config
    from pipelines.train.schedule import TrainStage, milestone_name
    from pipelines.train.train_log import TrainLog

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    stage = TrainStage.model_validate(config["stage"])
    torch.manual_seed(config["seed"])
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = "cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu"
    deepspeed.init_distributed(dist_backend="nccl" if device == "cuda" else "gloo")

    start = local_model_folder(config["start"])
    model = MonoInternVLForCausalLM.from_pretrained(start)
    tokenizer = AutoTokenizer.from_pretrained(start)
    processor = MonoInternVLImageProcessor.from_pretrained(start)
    set_trainable(model, stage.trainable)
    model.train()
    opt = stage.optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.lr, betas=opt.betas,
                                  weight_decay=opt.weight_decay)  # fmt: skip
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(stage, world, device))
    if world == 1 and stage.zero_stage == 0:
        engine.enable_backward_allreduce = False  # one worker: no gradients to average
    loader = StageLoader(config["shards"], tokenizer, processor, max_patches=config["max_patches"],
                         max_tokens=stage.max_packed_tokens, rank=rank, world=world,
                         seed=config["seed"], epochs=None, loss_reduction=stage.loss_reduction,
                         report=lambda message: print(f"[rank {rank}] {message}"))  # fmt: skip

    step, history, samples_seen = 0, [], 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            engine.load_checkpoint(folder, tag="ds")
            state = json.loads((Path(folder) / LOADER_STATE.format(rank=rank)).read_text())
            loader.load_state_dict(state["loader"])
            step, history = state["step"], state.get("history", [])
            samples_seen = state.get("samples_seen", 0)
            torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    log = TrainLog(config["logs"], stage.name, history) if rank == 0 else None
    progress = _progress(stage, step) if rank == 0 else None
    batches, resumed_from = iter(loader), step
    accumulation, step_times = stage.accumulation(world), []
    last, reporting = time.perf_counter(), 0.0
    while step < stage.steps:
        for group in optimizer.param_groups:
            group["lr"] = stage.lr_at(step)
        losses, tokens, samples, capacity, seconds = [], 0, 0, 0, 0.0
        for _ in range(accumulation):
            batch = _stack([next(batches) for _ in range(stage.micro_batch)])
            started = time.perf_counter()  # compute only: the loader is measured on its own
            logits = engine(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            sample_ids=batch["sample_ids"],
                            pixel_values=batch["pixel_values"]).logits  # fmt: skip
            loss = weighted_loss(logits, batch["labels"], batch["loss_weights"])
            engine.backward(loss)
            engine.step()
            seconds += time.perf_counter() - started
            losses.append(loss.item())
            real = batch["attention_mask"].bool()  # the rest is padding
            tokens += int(real.sum())
            samples += sum(len(ids[mask].unique()) for ids, mask in zip(batch["sample_ids"], real))
            capacity += batch["sample_ids"].numel()
        step += 1
        step_times.append(seconds)
        warm = step_times[1:] or step_times  # the first step of a process warms up
        grad_norm = engine.get_global_grad_norm()
        seen = torch.tensor([samples, tokens], dtype=torch.float64)
        torch.distributed.all_reduce(seen)  # every worker's samples and tokens this step
        samples_seen += int(seen[0])
        metrics = {"step": step, "loss": sum(losses) / len(losses), "lr": stage.lr_at(step - 1),
                   "grad_norm": None if grad_norm is None else float(grad_norm),
                   "tokens": int(seen[1]), "samples_seen": samples_seen,
                   "packing_efficiency": tokens / capacity, "step_seconds": seconds,
                   "wall_seconds": time.perf_counter() - last,  # with the data's time
                   "report_seconds": reporting,  # the previous step's export/checkpoint/report
                   "tokens_per_s": int(seen[1]) / seconds,
                   "mean_step_seconds": sum(warm) / len(warm),
                   "resumed_from": resumed_from}  # fmt: skip
        reported_from = time.perf_counter()
        if log is not None:
            log.add(metrics)
            progress.update(1)
            progress.set_description(f"train {stage.name} loss {metrics['loss']:.3f}")
        if step in stage.milestone_steps() and step < stage.steps:
            _export(engine, tokenizer, processor, rank, config["folder"], milestone_name(step),
                    {**config["final_settings"], "milestone": step})  # fmt: skip
        if step % stage.checkpoint_every == 0 or step == stage.steps:
            with tempfile.TemporaryDirectory() as folder:
                engine.save_checkpoint(folder, tag="ds")
                state = {"step": step, "loader": loader.state_dict(),
                         "torch_rng": torch.get_rng_state().tolist(),
                         "history": log.history if log else [],
                         "samples_seen": samples_seen}  # fmt: skip
                (Path(folder) / LOADER_STATE.format(rank=rank)).write_text(json.dumps(state))
                if log is not None:
                    log.sync()
                saved = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=saved)
        elif step % stage.report_every == 0:
            ray.train.report(metrics)  # a barrier across workers: not every step
        reporting, last = time.perf_counter() - reported_from, time.perf_counter()
    if log is not None:
        log.finish()
        progress.close()
    _export(engine, tokenizer, processor, rank, config["folder"], "final", config["final_settings"])


def _progress(stage, step: int):
    """A progress bar with ETA, drawn by the Ray driver (not interleaved worker output)."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(total=stage.steps, desc=f"train {stage.name}")
    bar.update(step)  # a resumed stage starts where its checkpoint was
    return bar


def _export(engine, tokenizer, processor, rank: int, parent: str, name: str,
            settings: dict) -> None:  # fmt: skip
    """The engine's weights as a Hugging Face folder `parent/name`, recorded as complete.

    Every rank calls it: under ZeRO-3 the parameters are gathered from all ranks first; rank 0
    writes. A model without attention experts is also written in the official Mono-InternVL
    layout (`official/`), which the released code loads.
    """
    import deepspeed

    from model.official import save_official
    from pipelines.model_folders import model_folder

    model = engine.module
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
              if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())  # fmt: skip
    with gather:
        if rank != 0:
            return

        def save(local: Path) -> None:
            model.save_pretrained(local)
            tokenizer.save_pretrained(local)
            processor.save_pretrained(local)
            if not model.config.visual_attention_experts:
                save_official(model, local / "official")

        model_folder(parent, name, settings, save, Path(tempfile.mkdtemp()) / name)
    os.sync()
