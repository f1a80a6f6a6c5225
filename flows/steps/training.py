"""The train command's step: each curriculum stage from the last one's final weights."""

from __future__ import annotations

from flows.commands import NotReadyError
from flows.steps.base import Step
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.markdown import table
from pipelines.outputs import checkpoint, stage_manifest, training_logs


class Train(Step):
    name, command = "train", "train"
    inputs = ("stages", "model")
    doc = "train each curriculum stage from the last one's final weights (Ray Train + DeepSpeed)"
    settings_per_unit = True

    def folder(self, config, layout, source):
        return layout.checkpoints()

    def units(self, config, layout, source):
        return [stage.name for stage in config.train.stages]

    def settings(self, config, layout, source, unit):
        from pipelines.train.job import stage_record_settings, stage_settings, stage_start

        stage = next(s for s in config.train.stages if s.name == unit)
        use_gpu = config.train.use_gpu
        if use_gpu == "auto":  # status starts no Ray: the device is the one the stage trained on
            record = CompletionLog(layout.checkpoints()).read(unit)
            use_gpu = bool(record and record["settings"].get("use_gpu"))
        try:
            start = stage_start(layout, config.train, unit)
            settings = stage_settings(layout, config.train, stage, start, use_gpu)
            return stage_record_settings(settings, stage)
        except ValueError:
            return None  # its data or its start checkpoint is not there yet

    def parts(self, config):
        """One Prefect task per stage: the UI shows each stage's state and retries a stage."""
        return [stage.name for stage in config.train.stages]

    def progress(self, config, layout, part):
        now = training_logs(layout, part).progress()
        if now is None:
            return None
        eta = f", ETA {now['eta_seconds']:.0f} s" if now["step"] < now["steps"] else ""
        return now["step"] / now["steps"], (
            f"train {part}: step {now['step']} / {now['steps']}, loss {now['loss']:.4f}, "
            f"{now['samples_seen']} samples{eta}")  # fmt: skip

    def run(self, config, source, upstream):
        from pipelines.ray_runtime import ensure_ray
        from pipelines.train.job import stage_start, train_stage

        layout = RunLayout(config.run_root)
        init = layout.init_checkpoint()
        if checkpoint(init).record is None:
            raise NotReadyError(f"train: no start checkpoint {init}: run `evip model` first (it "
                                "builds Mono-InternVL from model.llm_path)")  # fmt: skip
        unbuilt = [s.name for s in config.train.stages
                   if stage_manifest(layout, s.name) is None]  # fmt: skip
        if unbuilt:  # checked before the first stage trains, not days later at the last
            raise NotReadyError(f"train: stages {unbuilt} have no shards yet: run `evip stages` "
                                "first")  # fmt: skip
        ensure_ray(config.ray)
        stage = next(s for s in config.train.stages if s.name == source)
        patches = next(s.max_patches for s in config.stages.stages if s.name == source)
        trained = train_stage(layout, config.train, stage, stage_start(layout, config.train,
                                                                      source), patches)  # fmt: skip
        return {"source": source, **trained}

    def report(self, report, config):
        m = report["metrics"]
        row = [report["stage"], m.get("step", "-"), m.get("samples_seen", "-"),
               f"{m.get('loss', float('nan')):.4f}", f"{m.get('tokens_per_s', 0):.0f}",
               report["logs"]]  # fmt: skip
        header = ["stage", "steps", "samples seen", "final loss", "tokens/s", "logs"]
        curve = f"![{report['stage']} loss]({storage.join(report['logs'], 'loss.png')})"
        return f"## train {report['stage']}\n\n" + table(header, [row], "lrrrrl") + "\n\n" + curve
