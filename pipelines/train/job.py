"""One curriculum stage as a Ray Train job: TorchTrainer workers running `loop.train_loop`.

The stage is complete when its `final` folder has its completion record (settings: the stage's
schedule, its data manifest and the checkpoint it started from), so a finished stage is a no-op.
Ray Train keeps the stage's checkpoints under the run's `train/` storage with a run name fixed by
those settings: rerunning after the whole job died continues from the latest checkpoint
(`ray.train.get_checkpoint()` in the loop); a failed worker is retried (`FailureConfig`).
"""

from __future__ import annotations

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.layout import RunLayout
from pipelines.train.schedule import TrainOptions, TrainStage


def stage_settings(layout: RunLayout, stage: TrainStage, start: str) -> dict:
    """What a stage's final weights are made from: schedule, data manifest, start checkpoint."""
    data = CompletionLog(layout.stages()).read(stage.name)
    if data is None:
        raise ValueError(f"train {stage.name}: the stage's shards are not built yet")
    parent, name = start.rsplit("/", 1)
    began = CompletionLog(parent).read(name)
    if began is None:
        raise ValueError(f"train {stage.name}: start checkpoint {start} is not complete")
    return {"stage": stage.model_dump(mode="json"), "data": data["settings_hash"],
            "start": began["settings_hash"]}


def train_stage(layout: RunLayout, options: TrainOptions, stage: TrainStage, start: str,
                max_patches: int) -> dict:  # fmt: skip
    """Trains one stage from the checkpoint folder `start`.

    Returns:
        {"final": the final folder's URL, "milestones": [{"step", "weights"}] exported along
        the way (the last is final), "logs": the stage's log folder (TensorBoard events,
        metrics.jsonl, loss.png), "metrics": the last reported metrics (empty when the stage was
        already complete)}.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.train.loop import milestone_name, train_loop

    folder = layout.path("checkpoints", stage.name)
    final = storage.join(folder, "final")
    settings = stage_settings(layout, stage, start)
    logs = layout.path("reports", "train", stage.name)
    milestones = [{"step": step, "weights": storage.join(folder, milestone_name(step))}
                  for step in stage.milestone_steps()[:-1]]  # fmt: skip
    milestones.append({"step": stage.steps, "weights": final})
    done = {"final": final, "logs": logs, "milestones": milestones}
    if CompletionLog(folder).is_complete("final", settings):
        return {**done, "metrics": {}}
    manifest = CompletionLog(layout.stages()).read(stage.name)["covered"]
    shards = [storage.join(layout.stages(stage.name), f"{s['name']}.tar")
              for s in manifest["shards"]]  # fmt: skip
    config = {"stage": stage.model_dump(mode="json"), "shards": shards, "start": start,
              "max_patches": max_patches, "seed": options.seed, "use_gpu": options.use_gpu,
              "threads": options.cpus_per_worker, "folder": folder,
              "logs": logs,
              "final_settings": settings}  # fmt: skip
    trainer = TorchTrainer(
        train_loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=options.workers, use_gpu=options.use_gpu,
            resources_per_worker=None if options.use_gpu else {"CPU": options.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if options.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"{stage.name}-{settings_hash(settings)[:10]}",
            storage_path=_train_storage(layout),
            failure_config=ray.train.FailureConfig(max_failures=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=stage.keep_checkpoints)),
    )  # fmt: skip
    result = trainer.fit()
    if not CompletionLog(folder).is_complete("final", settings):
        raise RuntimeError(f"train {stage.name}: finished without its final checkpoint")
    return {**done, "metrics": dict(result.metrics or {})}


def _train_storage(layout: RunLayout) -> str:
    """Ray Train's storage for the run's checkpoints (a local folder or the run's object store)."""
    url = layout.path("train")
    if storage.is_local(url):
        storage.makedirs(url)
    return url
