"""The evaluate command's step: every checkpoint of the campaign against the held-out probe and
the configured lmms-eval tasks."""

from __future__ import annotations

from flows.steps.base import Step
from pipelines.layout import RunLayout
from pipelines.markdown import table


def probe_url(config, layout) -> str | None:
    """The held-out probe: `evaluate.probe`, or the one a source of the run provides (the demo's
    synthetic web draws one)."""
    from flows.demo import demo_probe

    if config.evaluate.probe is not None:
        return config.evaluate.probe
    return demo_probe(config, layout)


def _units(config, layout) -> dict[str, tuple[str, str, str]]:
    """{unit: (checkpoint, weights, part)} of the run: each checkpoint's probe and tasks."""
    from pipelines.evaluate.campaign import campaign_checkpoints
    from pipelines.evaluate.job import evaluation_units

    checkpoints = {c["name"]: c["weights"] for c in campaign_checkpoints(layout, config.train)}
    return evaluation_units(checkpoints, probe_url(config, layout), config.evaluate)


class Evaluate(Step):
    name, command = "evaluate", "evaluate"
    inputs = ("model", "train")
    doc = ("held-out loss, caption/grounding accuracy and text perplexity of every checkpoint, "
           "and its lmms-eval benchmarks (a Ray task each)")  # fmt: skip
    settings_per_unit = True

    def folder(self, config, layout, source):
        return layout.evaluations()

    def units(self, config, layout, source):
        return list(_units(config, layout))

    def settings(self, config, layout, source, unit):
        return self.unit_settings(config, layout, source)[unit]

    def unit_settings(self, config, layout, source):
        """Every part's settings at once: each checkpoint and the probe looked up once."""
        from pipelines.evaluate.job import evaluation_settings

        return evaluation_settings(_units(config, layout), probe_url(config, layout),
                                   config.evaluate)

    def run(self, config, source, upstream):
        from pipelines.evaluate.campaign import evaluate_campaign
        from pipelines.ray_runtime import ensure_ray

        layout = RunLayout(config.run_root)
        probe = probe_url(config, layout)
        if probe is None and not config.evaluate.harness_tasks:
            return {"source": "run", "skipped": "no evaluate.probe or evaluate.harness_tasks"}
        ensure_ray(config.ray)
        return {"source": "run", **evaluate_campaign(layout, config.train, probe,
                                                     config.evaluate)}  # fmt: skip

    def report(self, report, config):
        from pipelines.evaluate.campaign import accuracy_line

        if "skipped" in report:
            return f"## evaluate\n\nskipped: {report['skipped']}"
        parts = ["## evaluate"]
        if "chance" in report:
            stages = config.train.stages
            samples = report["figures"][stages[-1].name]["samples"] if stages else []
            rows = table(["generated caption", "true description"],
                         [[s["caption"], s["truth"]] for s in samples])  # fmt: skip
            parts += [report["tables"]["probe"],
                      f"chance caption accuracy: {report['chance']:.3f}",
                      f"![quality against data seen]({report['figures_png']['probe']})",
                      "captions of the last stage:", rows, accuracy_line(report)]  # fmt: skip
        if "benchmarks" in report["tables"]:
            parts += ["### benchmarks (lmms-eval)", report["tables"]["benchmarks"],
                      f"![benchmarks against data seen]({report['figures_png']['benchmarks']})"]
        return "\n\n".join(parts)
