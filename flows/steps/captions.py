"""The recaption command's step: caption each kept image of a source with the teacher."""

from __future__ import annotations

from flows.steps.base import Step, source_options
from pipelines import storage
from pipelines.outputs import kept_shards
from recaption.job import caption_settings
from recaption.subset import caption_subset


class Recaption(Step):
    name, command = "recaption", "recaption"
    inputs = ("filter",)
    doc = "caption each kept image with the teacher (Ray Data actors)"
    per_source, settings_per_unit = True, True

    def folder(self, config, layout, source):
        return layout.captions(config.teacher.name, source)

    def units(self, config, layout, source):
        kept = kept_shards(layout, source)
        return None if kept is None else kept.keep_list_units()

    def settings(self, config, layout, source, unit):
        if not storage.exists(layout.keep_list(source, int(unit))):
            return None  # a shard no keep-list has (any more)
        subset = caption_subset(config.recaption, layout.filtered(source))  # as the job draws it
        return caption_settings(config.teacher, config.cleaning, layout.raw(source),
                                layout.filtered(source), unit, subset)  # fmt: skip

    def sources(self, config):
        from flows.recaption import recaption_sources

        return [s.name for s in recaption_sources(config)]

    def run(self, config, source, upstream):
        from flows.recaption import recaption_one

        return recaption_one(config, source_options(config, source))

    def report(self, report, config):
        from flows.recaption import recaption_markdown

        return recaption_markdown(report, config)
