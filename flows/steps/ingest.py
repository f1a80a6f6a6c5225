"""The ingest command's steps: plan each source file, download (and repair) each source, filter
and deduplicate every source together."""

from __future__ import annotations

from flows.steps.base import Step, source_options
from pipelines.filter_job import filter_settings
from pipelines.layout import shard_name
from pipelines.outputs import FILTER_UNIT
from pipelines.plan import plan_settings
from pipelines.sources import SourceError, source_files


def _source_files(config, source) -> list[str] | None:
    """The source's files; None for a source the demo writes before its first download (nothing
    is done yet, which is not an error)."""
    from flows.demo import written_by_the_demo

    try:
        return source_files(source_options(config, source))
    except SourceError:
        if written_by_the_demo(config, source):
            return None
        raise


class Plan(Step):
    name, command = "plan", "ingest"
    doc = "read, metadata-filter and normalise each source file (Ray tasks)"
    per_source, needs_web, settings_per_unit = True, True, True
    runs = False  # `download` plans first

    def folder(self, config, layout, source):
        return layout.raw_folder(source).plan()

    def units(self, config, layout, source):
        files = _source_files(config, source)
        return None if files is None else [shard_name(i) for i in range(len(files))]

    def settings(self, config, layout, source, unit):
        files = _source_files(config, source)
        return None if files is None else plan_settings(source_options(config, source),
                                                        files[int(unit)])  # fmt: skip


class Download(Step):
    name, command = "download", "ingest"
    inputs = ("plan",)
    doc = "plan, download (img2dataset on Ray) and repair one source"
    per_source, needs_web = True, True

    def folder(self, config, layout, source):
        return layout.raw(source)

    def unit_settings(self, config, layout, source):
        from pipelines.ingest import download_units

        files = _source_files(config, source)
        return None if files is None else download_units(source_options(config, source),
                                                         config.download, layout, files)

    def units(self, config, layout, source):
        units = self.unit_settings(config, layout, source)
        return None if units is None else list(units)

    def settings(self, config, layout, source, unit):
        units = self.unit_settings(config, layout, source)
        return None if units is None else units.get(unit)

    def run(self, config, source, upstream):
        from flows.ingest import download_one

        return download_one(config, source_options(config, source))


class Filter(Step):
    name, command = "filter", "ingest"
    inputs = ("download",)
    doc = "filter every source and deduplicate across them (Ray, hash buckets)"

    def folder(self, config, layout, source):
        return layout.filtered(source)

    def units(self, config, layout, source):
        return [FILTER_UNIT]

    def settings(self, config, layout, source, unit):
        return filter_settings(layout, [s.name for s in config.sources], config.filter)

    def sources(self, config):
        """Run once over every source, it has a row per source in `evip status`."""
        return [s.name for s in config.sources]

    def run(self, config, source, upstream):
        from flows.ingest import filter_all

        return filter_all(config, upstream)

    def report(self, report, config):
        from flows.ingest import ingest_markdown

        return ingest_markdown(report)
