"""The stages command's step: build each curriculum stage's webdataset shards."""

from __future__ import annotations

from flows.commands import NotReadyError
from flows.steps.base import Step
from pipelines.layout import RunLayout
from pipelines.markdown import table
from pipelines.outputs import kept_shards


class Stages(Step):
    name, command = "stages", "stages"
    inputs = ("filter", "recaption")
    doc = "build each curriculum stage's webdataset shards (Ray tasks)"
    settings_per_unit = True

    def folder(self, config, layout, source):
        return layout.stages()

    def units(self, config, layout, source):
        return [spec.name for spec in config.stages.stages]

    def settings(self, config, layout, source, unit):
        from pipelines.stages.build import resolve_stage

        spec = next(s for s in config.stages.stages if s.name == unit)
        try:
            return resolve_stage(layout, spec, [s.name for s in config.sources],
                                 config.teacher.name)[2]  # fmt: skip
        except ValueError:
            return None  # earlier steps are not done

    def run(self, config, source, upstream):
        from pipelines.ray_runtime import ensure_ray
        from pipelines.stages.build import build_stage

        layout, names = RunLayout(config.run_root), [s.name for s in config.sources]
        unfiltered = [n for n in names if kept_shards(layout, n) is None]
        if unfiltered:
            raise NotReadyError(f"stages: sources {unfiltered} are not filtered yet: run `evip "
                                "ingest` first")  # fmt: skip
        ensure_ray(config.ray)
        return {"source": "run", "stages": [build_stage(layout, spec, names, config.teacher.name)
                                             for spec in config.stages.stages]}  # fmt: skip

    def report(self, report, config):
        rows = [[m["stage"], m["samples"], len(m["shards"]), m["per_source"], m["per_task"],
                 m["fallback_captions"]] for m in report["stages"]]  # fmt: skip
        header = ["stage", "samples", "shards", "per source", "per task", "fallback captions"]
        return "## stages\n\n" + table(header, rows, "lrrllr")
