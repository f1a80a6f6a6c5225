"""One curriculum stage as a Ray Train job: TorchTrainer workers running `loop.train_loop`.

The stage is complete when `checkpoints/_done/<stage>.json` says so (settings: what its weights are
made of, `stage_settings`, plus which milestones it exports; covered: its final and milestone
folders, logs and last metrics), so a finished stage is a no-op. Each exported folder has its own
record. Ray Train keeps the stage's checkpoints under the run's `train/` storage with a run name
fixed by those settings (`run_name`): rerunning after the whole job died continues from the latest
checkpoint (`ray.train.get_checkpoint()` in the loop), and other settings start a fresh run; a
failed worker is retried (`FailureConfig`).
"""

from __future__ import annotations

from pipelines import storage
from pipelines.completion import CompletionLog, settings_hash
from pipelines.layout import RunLayout
from pipelines.outputs import checkpoint, stage_manifest, training_logs
from pipelines.train.schedule import TrainOptions, TrainStage, milestone_name


class StageFailedError(RuntimeError):
    """Ray Train gave up on a stage after retrying its workers (`FailureConfig`); running the
    stage again from outside would only repeat those retries (a flow does not retry it)."""


NOT_WEIGHTS = ("report_every", "checkpoint_every", "keep_checkpoints", "milestones",
               "activation_checkpointing", "checkpoint_every_n_layers")  # fmt: skip
"""Schedule fields that leave the weights as they are: how often the loop reports, checkpoints and
keeps checkpoints (a resume is exact: loader position, RNG and step are in the checkpoint), which
steps are exported besides `final` (the weights at a step do not depend on it), and which layers
are recomputed in backward (memory only: the same gradients)."""


def stage_settings(layout: RunLayout, options: TrainOptions, stage: TrainStage, start: str,
                   use_gpu: bool) -> dict:  # fmt: skip
    """What a stage's weights are made from, and nothing else, so the next stage (whose start is
    this one's `final`) retrains exactly when they change.

    The schedule without `NOT_WEIGHTS`, the seed (initialisation-free randomness and data order),
    the worker count (which shards each worker reads, how the global batch is split, and one
    loader state per rank in a checkpoint), the device, `use_gpu` as resolved (`precision` and
    `packed_attention` auto follow it), the data manifest and the start checkpoint.

    Raises:
        ValueError: the stage's shards or its start checkpoint are not there yet.
    """
    data = stage_manifest(layout, stage.name)
    if data is None:
        raise ValueError(f"train {stage.name}: the stage's shards are not built yet")
    began = checkpoint(start)
    if began.record is None:
        raise ValueError(f"train {stage.name}: start checkpoint {start} is not complete")
    return {"stage": stage.model_dump(mode="json", exclude=set(NOT_WEIGHTS)),
            "seed": options.seed, "workers": options.workers, "use_gpu": use_gpu,
            "data": data.content_hash, "start": began.settings_hash}  # fmt: skip


def stage_record_settings(settings: dict, stage: TrainStage) -> dict:
    """The stage unit's settings: its weights' (`stage_settings`) and which milestones it
    exports. Other milestones retrain the stage (the weights of a past step are only seen while
    training) but leave its `final` record, and so the stages after it, as they are."""
    return {**settings, "milestones": stage.milestones}


def run_name(stage: TrainStage, record_settings: dict) -> str:
    """Ray Train's run of a stage: the same settings resume it, any other start a fresh one."""
    return f"{stage.name}-{settings_hash(record_settings)[:10]}"


def clear_stale_milestones(layout: RunLayout, stage: TrainStage, settings: dict) -> list[str]:
    """Removes the stage's milestone folders of other settings or other milestone steps (record
    first, then the folder), so `checkpoints/<stage>/` never holds weights of two settings.
    Those of these settings stay: a resumed run does not export them again.

    Returns:
        the names of the folders removed.
    """
    folder = layout.checkpoints(stage.name)
    log = CompletionLog(folder)
    wanted = {milestone_name(step): {**settings, "milestone": step}
              for step in stage.milestone_steps()[:-1]}  # fmt: skip
    found = {url.rsplit("/", 1)[1] for url in storage.glob(storage.join(folder, "milestone-*"))}
    found |= {unit for unit in log.records() if unit.startswith("milestone-")}
    removed = sorted(name for name in found
                     if name not in wanted or not log.is_complete(name, wanted[name]))  # fmt: skip
    for name in removed:
        log.clear(name)
        storage.remove(storage.join(folder, name))
    return removed


def train_stage(layout: RunLayout, options: TrainOptions, stage: TrainStage, start: str,
                max_patches: int) -> dict:  # fmt: skip
    """Trains one stage from the checkpoint folder `start`.

    Returns:
        {"final": the final folder's URL, "milestones": [{"step", "weights"}] exported along
        the way (the last is final), "logs": the stage's log folder (TensorBoard events,
        metrics.jsonl, loss.png), "metrics": the last reported metrics}; a stage already
        complete returns what it returned when it finished.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.train.loop import train_loop

    folder, final = layout.checkpoints(stage.name), layout.stage_checkpoint(stage.name)
    use_gpu = _use_gpu(options)
    settings = stage_settings(layout, options, stage, start, use_gpu)
    record = stage_record_settings(settings, stage)
    logs = layout.train_logs(stage.name)
    milestones = [{"step": step,
                   "weights": layout.stage_checkpoint(stage.name, milestone_name(step))}
                  for step in stage.milestone_steps()[:-1]]  # fmt: skip
    milestones.append({"step": stage.steps, "weights": final})
    done = {"stage": stage.name, "final": final, "logs": logs, "milestones": milestones}
    stages = CompletionLog(layout.checkpoints())
    if stages.is_complete(stage.name, record):
        return stages.read(stage.name)["covered"]
    shards = stage_manifest(layout, stage.name).shard_urls
    if len(shards) < options.workers:
        raise ValueError(f"train {stage.name}: {len(shards)} stage shards for {options.workers} "
                         "workers (each reads whole shards): lower the stage's samples_per_shard "
                         "or train.workers")  # fmt: skip
    clear_stale_milestones(layout, stage, settings)
    training_logs(layout, stage.name).clear_progress()
    config = {"stage": stage.model_dump(mode="json"), "shards": shards, "start": start,
              "max_patches": max_patches, "seed": options.seed, "use_gpu": use_gpu,
              "threads": options.cpus_per_worker, "folder": folder,
              "logs": logs,
              "final_settings": settings}  # fmt: skip
    trainer = TorchTrainer(
        train_loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=options.workers, use_gpu=use_gpu,
            resources_per_worker=None if use_gpu else {"CPU": options.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=run_name(stage, record),
            storage_path=_train_storage(layout),
            failure_config=ray.train.FailureConfig(max_failures=2),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=stage.keep_checkpoints)),
    )  # fmt: skip
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise StageFailedError(f"train {stage.name}: {error}") from error
    if not CompletionLog(folder).is_complete("final", settings):
        raise RuntimeError(f"train {stage.name}: finished without its final checkpoint")
    report = {**done, "metrics": dict(result.metrics or {})}
    stages.write(stage.name, record, covered=report)
    return report


def _use_gpu(options: TrainOptions) -> bool:
    """`train.use_gpu` with `auto` resolved: GPU workers when the Ray cluster has GPUs."""
    if options.use_gpu != "auto":
        return options.use_gpu
    import ray

    if not ray.is_initialized():
        ray.init()  # what TorchTrainer.fit would do
    return ray.cluster_resources().get("GPU", 0) > 0


def _train_storage(layout: RunLayout) -> str:
    """Ray Train's storage for the run's checkpoints (a local folder or the run's object store)."""
    url = layout.train_runs()
    if storage.is_local(url):
        storage.makedirs(url)
    return url


def stage_start(layout: RunLayout, options: TrainOptions, name: str) -> str:
    """The checkpoint stage `name` starts from: the previous stage's final, the first `init`."""
    names = [stage.name for stage in options.stages]
    index = names.index(name)
    return (layout.init_checkpoint() if index == 0
            else layout.stage_checkpoint(names[index - 1]))  # fmt: skip
