"""The campaign's steps as data: each described once; the CLI, the Prefect flow and `evip status`
all read this table (docs/spine.md). A new step is one new entry.

A step runs once per source (`per_source`) or once over the run; `run(config, source, upstream)`
gets the reports of the step before it. `folder`, `units` and `settings` say where its completion
records are, which units a complete step has, and what settings they must have been made with:
that is all `evip status` needs.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from flows.commands import NotReadyError
from flows.config import RunConfig
from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.download import download_settings
from pipelines.filter_job import UNIT as FILTER_UNIT
from pipelines.filter_job import filter_settings
from pipelines.layout import RunLayout, shard_name
from pipelines.markdown import table
from pipelines.plan import plan_settings, planned
from pipelines.sources import SourceError, source_files
from recaption.job import caption_settings


@dataclass(frozen=True)
class Step:
    name: str
    doc: str
    command: str
    """The CLI command that runs this step (with the others of the same command, in order)."""
    per_source: bool
    needs_web: bool
    """Runs while the run's synthetic web (if any) is served."""
    run: Callable[[RunConfig, str | None, list], dict]
    folder: Callable[[RunConfig, RunLayout, str | None], str]
    units: Callable[[RunConfig, RunLayout, str | None], list[str] | None]
    """Units of the complete step; None while an earlier step has not said yet."""
    settings: Callable[[RunConfig, RunLayout, str | None, str], dict | None]
    """Settings unit `unit` must be recorded with; None while unknown."""
    settings_per_unit: bool = False
    """Whether units have settings of their own (else `settings` is asked once)."""
    report: Callable[[dict, RunConfig], str] | None = None
    """A report of the step's run as markdown (one per source for per-source results)."""


def _source(config: RunConfig, name: str):
    return next(s for s in config.sources if s.name == name)


# plan
def _source_files(config, source) -> list[str] | None:
    """The source's files; None for the synthetic web's source before the web is written (by
    `evip ingest`): nothing is done yet, which is not an error."""
    web = config.synthetic_web
    try:
        return source_files(_source(config, source))
    except SourceError:
        if web is not None and web.source_name == source:
            return None
        raise


def _plan_units(config, layout, source):
    files = _source_files(config, source)
    return None if files is None else [shard_name(i) for i in range(len(files))]


def _plan_settings(config, layout, source, unit):
    files = _source_files(config, source)
    return None if files is None else plan_settings(_source(config, source), files[int(unit)])


# download
def _download_units(config, layout, source):
    raw, files = layout.raw_folder(source), _source_files(config, source)
    plan = None if files is None else planned(raw, len(files))
    if plan is None:
        return None
    per_shard = config.download.samples_per_shard
    count = sum(math.ceil(rows / per_shard) for _, rows in plan["inputs"])
    for round_number in range(1, config.download.repair_rounds + 1):
        record = CompletionLog(raw.repair(round_number)).read("round")
        if record is None:
            return None
        rows = sum(n for _, n in record["covered"]["inputs"])
        count += math.ceil(rows / per_shard)
    return [shard_name(s) for s in range(count)]


def _download_settings(config, layout, source, unit):
    files = _source_files(config, source)
    plan = None if files is None else planned(layout.raw_folder(source), len(files))
    return None if plan is None else download_settings(config.download, plan["id"])


# filter
def _filter_settings(config, layout, source, unit):
    return filter_settings(layout, [s.name for s in config.sources], config.filter)


# recaption
def _caption_folder(config, layout, source):
    return layout.captions(config.teacher.name, source)


def _caption_units(config, layout, source):
    if CompletionLog(layout.filtered(source)).read(FILTER_UNIT) is None:
        return None
    files = storage.glob(storage.join(layout.filtered(source), "[0-9]*.parquet"))
    return [f.rsplit("/", 1)[1].split(".")[0] for f in files]


def _caption_settings(config, layout, source, unit):
    if not storage.exists(storage.join(layout.filtered(source), f"{unit}.parquet")):
        return None  # a shard no keep-list has (any more)
    return caption_settings(config.teacher, config.cleaning, layout.raw(source),
                            layout.filtered(source), unit)  # fmt: skip


# stages
def _stage_units(config, layout, source):
    return [spec.name for spec in config.stages.stages]


def _stage_settings(config, layout, source, unit):
    from pipelines.stages.build import resolve_stage

    spec = next(s for s in config.stages.stages if s.name == unit)
    try:
        return resolve_stage(layout, spec, [s.name for s in config.sources],
                             config.teacher.name)[2]  # fmt: skip
    except ValueError:
        return None  # earlier steps are not done


def _stages_report(report, config):
    rows = [[m["stage"], m["samples"], len(m["shards"]), m["per_source"], m["per_task"],
             m["fallback_captions"]] for m in report["stages"]]  # fmt: skip
    header = ["stage", "samples", "shards", "per source", "per task", "fallback captions"]
    return "## stages\n\n" + table(header, rows, "lrrllr")


def _run_stages(config, source, upstream):
    from pipelines.ray_runtime import ensure_ray
    from pipelines.stages.build import build_stage

    layout, names = RunLayout(config.run_root), [s.name for s in config.sources]
    unfiltered = [n for n in names if CompletionLog(layout.filtered(n)).read(FILTER_UNIT) is None]
    if unfiltered:
        raise NotReadyError(f"stages: sources {unfiltered} are not filtered yet: run `evip "
                            "ingest` first")  # fmt: skip
    ensure_ray(config.ray)
    _demo_instructions(config, layout)
    return {"source": "run", "stages": [build_stage(layout, spec, names, config.teacher.name)
                                         for spec in config.stages.stages]}  # fmt: skip


def _demo_instructions(config, layout) -> None:
    """The demo's S2 data: conversations from the synthetic web's ground truth, written once
    where a conversations stage expects its meta JSON."""
    from pipelines.synthetic.instructions import write_demo_instructions

    web = config.synthetic_web
    wanted = [s.meta for s in config.stages.stages if s.text == "conversations"]
    if web is None or not wanted or all(storage.exists(m) for m in wanted):
        return
    record = CompletionLog(layout.filtered(web.source_name)).read(FILTER_UNIT)
    shards = [int(k) for k, n in record["covered"]["kept_per_shard"].items() if n]
    meta = write_demo_instructions(layout, web.source_name, shards)
    for path in wanted:
        if path != meta and not storage.exists(path):
            raise ValueError(f"stages: meta {path} does not exist (the demo writes {meta})")


# model
def _model_settings(config, layout, source, unit):
    return {"model": config.model.model_dump(mode="json"), "stage": "init"}


# train
def _train_units(config, layout, source):
    return [stage.name for stage in config.train.stages]


def _train_settings(config, layout, source, unit):
    from pipelines.train.job import stage_record_settings, stage_settings, stage_start

    stage, use_gpu = next(s for s in config.train.stages if s.name == unit), config.train.use_gpu
    if use_gpu == "auto":  # status starts no Ray: the device is the one the stage trained on
        record = CompletionLog(layout.checkpoints()).read(unit)
        use_gpu = bool(record and record["settings"].get("use_gpu"))
    try:
        start = stage_start(layout, config.train, unit)
        settings = stage_settings(layout, config.train, stage, start, use_gpu)
        return stage_record_settings(settings, stage)
    except ValueError:
        return None  # its data or its start checkpoint is not there yet


def _run_train(config, source, upstream):
    from pipelines.ray_runtime import ensure_ray
    from pipelines.train.job import train_curriculum

    layout = RunLayout(config.run_root)
    if config.train.stages and CompletionLog(layout.checkpoints()).read("init") is None:
        init = storage.join(layout.checkpoints(), "init")
        raise NotReadyError(f"train: no start checkpoint {init}: run `evip model` first (it "
                            "builds Mono-InternVL from model.llm_path)")  # fmt: skip
    unbuilt = [s.name for s in config.train.stages
               if CompletionLog(layout.stages()).read(s.name) is None]  # fmt: skip
    if unbuilt:
        raise NotReadyError(f"train: stages {unbuilt} have no shards yet: run `evip stages` first")
    ensure_ray(config.ray)
    patches = {spec.name: spec.max_patches for spec in config.stages.stages}
    return {"source": "run", "stages": train_curriculum(layout, config.train, patches)}


def _train_report(report, config):
    rows, curves = [], []
    for stage in report["stages"]:
        m = stage["metrics"]
        rows.append([stage["stage"], m.get("step", "-"), m.get("samples_seen", "-"),
                     f"{m.get('loss', float('nan')):.4f}", f"{m.get('tokens_per_s', 0):.0f}",
                     stage["logs"]])  # fmt: skip
        curves.append(f"![{stage['stage']} loss]({storage.join(stage['logs'], 'loss.png')})")
    header = ["stage", "steps", "samples seen", "final loss", "tokens/s", "logs"]
    return "## train\n\n" + table(header, rows, "lrrrrl") + "\n\n" + "\n".join(curves)


# evaluate
def probe_url(config, layout) -> str | None:
    """The held-out probe: configured, or drawn from the run's synthetic web (the demo)."""
    if config.evaluate.probe is not None:
        return config.evaluate.probe
    if config.synthetic_web is None:
        return None
    return layout.path("eval", "probe")


def _evaluate_units(config, layout, source):
    from pipelines.evaluate.campaign import campaign_checkpoints

    return [c["name"] for c in campaign_checkpoints(layout, config.train)]


def _evaluate_settings(config, layout, source, unit):
    from pipelines.evaluate.campaign import campaign_checkpoints
    from pipelines.evaluate.job import evaluation_settings

    point = next(c for c in campaign_checkpoints(layout, config.train) if c["name"] == unit)
    probe = probe_url(config, layout)
    return None if probe is None else evaluation_settings(point["weights"], probe,
                                                          config.evaluate)  # fmt: skip


def _run_evaluate(config, source, upstream):
    from pipelines.evaluate.campaign import evaluate_campaign
    from pipelines.ray_runtime import ensure_ray
    from pipelines.synthetic.probe import write_probe

    layout = RunLayout(config.run_root)
    probe = probe_url(config, layout)
    if probe is None:
        return {"source": "run", "skipped": "no evaluate.probe configured"}
    if config.evaluate.probe is None and not storage.exists(storage.join(probe, "text.parquet")):
        write_probe(probe, config.synthetic_web.seed, config.evaluate.images,
                    config.evaluate.texts)  # fmt: skip
    ensure_ray(config.ray)
    return {"source": "run", **evaluate_campaign(layout, config.train, probe, config.evaluate)}


def _evaluate_report(report, config):
    from pipelines.evaluate.campaign import accuracy_line

    if "skipped" in report:
        return f"## evaluate\n\nskipped: {report['skipped']}"
    samples = report["figures"][config.train.stages[-1].name]["samples"] if config.train.stages \
        else []
    rows = table(["generated caption", "true description"],
                 [[s["caption"], s["truth"]] for s in samples])
    return (f"## evaluate\n\n{report['table']}\n\nchance caption accuracy: "
            f"{report['chance']:.3f}\n\n![quality against data seen]({report['figure']})\n\n"
            f"captions of the last stage:\n\n" + rows + "\n\n"
            + accuracy_line(report))


def _ingest_report(report, config):
    from flows.ingest import ingest_markdown

    return ingest_markdown(report)


def _recaption_report(report, config):
    from flows.recaption import recaption_markdown

    return recaption_markdown(report, config)


def _run_download(config, source, upstream):
    from flows.ingest import download_one

    return download_one(config, _source(config, source))


def _run_filter(config, source, upstream):
    from flows.ingest import filter_all

    return filter_all(config, upstream)


def _run_recaption(config, source, upstream):
    from flows.recaption import recaption_one

    return recaption_one(config, _source(config, source))


def _run_model(config, source, upstream):
    from flows.model_demo import run_model_demo

    return run_model_demo(config)


STEPS = [
    Step("plan", "read, metadata-filter and normalise each source file (Ray tasks)", "ingest",
         True, True, None, lambda c, lay, s: lay.raw_folder(s).plan(), _plan_units,
         _plan_settings, settings_per_unit=True),
    Step("download", "plan, download (img2dataset on Ray) and repair one source", "ingest",
         True, True, _run_download, lambda c, lay, s: lay.raw(s), _download_units,
         _download_settings),
    Step("filter", "filter every source and deduplicate across them (Ray, hash buckets)",
         "ingest", False, False, _run_filter, lambda c, lay, s: lay.filtered(s),
         lambda c, lay, s: [FILTER_UNIT], _filter_settings, report=_ingest_report),
    Step("recaption", "caption each kept image with the teacher (Ray Data actors)", "recaption",
         True, False, _run_recaption, _caption_folder, _caption_units, _caption_settings,
         settings_per_unit=True, report=_recaption_report),
    Step("stages", "build each curriculum stage's webdataset shards (Ray tasks)", "stages",
         False, False, _run_stages, lambda c, lay, s: lay.stages(), _stage_units,
         _stage_settings, settings_per_unit=True, report=_stages_report),
    Step("model", "build Mono-InternVL, caption, save and reload its checkpoints", "model",
         False, False, _run_model, lambda c, lay, s: lay.checkpoints(),
         lambda c, lay, s: ["init"] + ([] if c.model.experts.visual_attention_experts
                                       else ["init-official"]), _model_settings),
    Step("train", "train each curriculum stage from the last one's final weights (Ray Train + "
         "DeepSpeed)", "train", False, False, _run_train, lambda c, lay, s: lay.checkpoints(),
         _train_units, _train_settings, settings_per_unit=True, report=_train_report),
    Step("evaluate", "held-out loss, caption/grounding accuracy and text perplexity of every "
         "checkpoint (Ray tasks)", "evaluate", False, False, _run_evaluate,
         lambda c, lay, s: lay.path("reports", "eval"), _evaluate_units, _evaluate_settings,
         settings_per_unit=True, report=_evaluate_report),
]  # fmt: skip
"""In campaign order. `plan` has no `run` of its own: `download` plans first."""


def step_sources(step: Step, config: RunConfig) -> list[str | None]:
    """The sources a step covers (status rows); [None] for a run-wide step."""
    from flows.recaption import recaption_sources

    if not step.per_source:
        return [s.name for s in config.sources] if step.name == "filter" else [None]
    if step.name == "recaption":
        return [s.name for s in recaption_sources(config)]
    return [s.name for s in config.sources]


def run_step(step: Step, config: RunConfig, source: str | None, upstream: list) -> dict:
    """Runs a step; a failure is kept as the step's last error for `evip status`, then raised."""
    log = CompletionLog(step_folder(step, config, RunLayout(config.run_root), source))
    try:
        report = step.run(config, source, upstream)
    except Exception as error:
        log.write_error(step.name, "".join(traceback.format_exception(error))[-4000:])
        raise
    log.clear_errors(step.name)  # only its own: steps can share a folder (model and train)
    return report


DETERMINISTIC = (ValueError, TypeError, LookupError, AttributeError, NotImplementedError,
                 FileNotFoundError)  # fmt: skip
"""Errors the same config and inputs raise again: a bad value, inputs not made yet, a bug."""


def retryable(error: BaseException) -> bool:
    """Whether running a failed step again may pass: not after a deterministic error, nor after
    a training stage Ray Train has already retried (else one bug runs retries x max_failures
    times before anyone sees it)."""
    from pipelines.train.job import StageFailedError

    return not isinstance(error, (*DETERMINISTIC, StageFailedError))


def step_folder(step: Step, config: RunConfig, layout: RunLayout, source: str | None) -> str:
    """Where a step keeps its records (and its last error) for `source`; a step over all
    sources keeps them with the first source's."""
    if source is None and config.sources:
        source = config.sources[0].name
    return step.folder(config, layout, source)


def runnable(command: str | None = None) -> list[Step]:
    """Steps that run (of one CLI command, or all), in campaign order."""
    return [s for s in STEPS if s.run is not None and (command is None or s.command == command)]


def step_markdown(step: Step, report, config: RunConfig) -> list[tuple[str, str]]:
    """(source, markdown) for each per-source report of a step run; [] when it has none."""
    if step.report is None:
        return []
    reports = report if isinstance(report, list) else [report]
    return [(r.get("source", "run"), step.report(r, config)) for r in reports]


def run_steps(config: RunConfig, steps: list[Step]) -> dict:
    """Runs steps in order in this process (the CLI); prints each step's reports."""
    from flows.ingest import served_synthetic_web
    from pipelines.ingest import validate_sources

    results, upstream = {}, []
    with contextlib.ExitStack() as web:
        if any(step.needs_web for step in steps):
            web.enter_context(served_synthetic_web(config))
            validate_sources(config.sources)
        for step in steps:
            if not step.needs_web:
                web.close()  # downloads are done: stop serving the synthetic web
            if step.per_source:
                report = [run_step(step, config, s, upstream) for s in step_sources(step, config)]
            else:
                report = run_step(step, config, None, upstream)
            for _, markdown in step_markdown(step, report, config):
                print("\n" + markdown)
            results[step.name] = report
            upstream = report if isinstance(report, list) else [report]
    return results
