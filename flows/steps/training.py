"""The train command's step: each curriculum stage from the last one's final weights."""

from __future__ import annotations

from flows.commands import NotReadyError
from flows.steps.base import Step
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.layout import RunLayout
from pipelines.markdown import table
from pipelines.outputs import checkpoint, stage_manifest


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

    def run(self, config, source, upstream):
        from pipelines.ray_runtime import ensure_ray
        from pipelines.train.job import train_curriculum

        layout = RunLayout(config.run_root)
        init = layout.init_checkpoint()
        if config.train.stages and checkpoint(init).record is None:
            raise NotReadyError(f"train: no start checkpoint {init}: run `evip model` first (it "
                                "builds Mono-InternVL from model.llm_path)")  # fmt: skip
        unbuilt = [s.name for s in config.train.stages
                   if stage_manifest(layout, s.name) is None]  # fmt: skip
        if unbuilt:
            raise NotReadyError(f"train: stages {unbuilt} have no shards yet: run `evip stages` "
                                "first")  # fmt: skip
        ensure_ray(config.ray)
        patches = {spec.name: spec.max_patches for spec in config.stages.stages}
        return {"source": "run", "stages": train_curriculum(layout, config.train, patches)}

    def report(self, report, config):
        rows, curves = [], []
        for stage in report["stages"]:
            m = stage["metrics"]
            rows.append([stage["stage"], m.get("step", "-"), m.get("samples_seen", "-"),
                         f"{m.get('loss', float('nan')):.4f}", f"{m.get('tokens_per_s', 0):.0f}",
                         stage["logs"]])  # fmt: skip
            curves.append(f"![{stage['stage']} loss]({storage.join(stage['logs'], 'loss.png')})")
        header = ["stage", "steps", "samples seen", "final loss", "tokens/s", "logs"]
        return "## train\n\n" + table(header, rows, "lrrrrl") + "\n\n" + "\n".join(curves)
