"""Evaluating many checkpoints at once: one Ray task per checkpoint folder (thin adapter).

Each part of a checkpoint's evaluation (the probe, each lmms-eval task) is recorded alone beside
the run's other reports (`reports/eval/<checkpoint>@<part>.json`) with what it is made from, so
a part already made of the same weights is read, not redone: adding a benchmark evaluates that
benchmark only. A checkpoint's parts still to do share one Ray task and one loaded model.
"""

from __future__ import annotations

from pipelines import storage
from pipelines.evaluate.evaluate import (
    PROBE_FILES,
    PROBE_PART,
    EvalOptions,
    evaluation_parts,
    load_asker,
    merged,
    part_figures,
)
from pipelines.evaluate.probe_task import PROBE_TASKS, TASK_YAMLS
from pipelines.outputs import checkpoint
from pipelines.units import Resources, UnitWork, run_units


def evaluation_units(checkpoints: dict[str, str], probe: str | None,
                     options: EvalOptions) -> dict[str, tuple[str, str, str]]:  # fmt: skip
    """{unit: (checkpoint name, weights URL, part)}: one unit per checkpoint and part."""
    return {f"{name}@{part}": (name, url, part) for name, url in checkpoints.items()
            for part in evaluation_parts(probe, options)}  # fmt: skip


def evaluation_settings(units: dict[str, tuple[str, str, str]], probe: str | None,
                        options: EvalOptions) -> dict[str, dict | None]:  # fmt: skip
    """{unit: what its figures are made from} for `evaluation_units`' units, by content not
    place (a run root copied elsewhere evaluates nothing again): what made the weights, how they
    are asked, the probe's files (size and version) for the parts that read it, lmms-eval's
    version and the task for a harness part; None while the weights (or the probe) are not
    complete. Each checkpoint's record, the probe and lmms-eval are looked up once."""
    made_with = {url: checkpoint(url).settings_hash for _, url, _ in units.values()}
    probe_files = None
    if probe is not None and probe_exists(probe):
        probe_files = {name: storage.fingerprint(storage.join(probe, name))
                       for name in PROBE_FILES}  # fmt: skip
    harness = None
    settings: dict[str, dict | None] = {}
    for unit, (_, url, part) in units.items():
        reads_probe = part == PROBE_PART or part in PROBE_TASKS
        if made_with[url] is None or (reads_probe and probe_files is None):
            settings[unit] = None
            continue
        asks = {"device": "cuda" if options.gpus > 0 else "cpu",
                "max_patches": options.max_patches, "batch_size": options.batch_size}
        record = {"made_with": made_with[url], "part": part}
        if reads_probe:
            record["probe"] = probe_files
            asks |= {"prompt": options.prompt, "max_new_tokens": options.max_new_tokens}
        if part == PROBE_PART:
            asks |= {"images": options.images, "texts": options.texts}
        else:
            asks |= {"include": list(options.harness_include), "limit": options.harness_limit}
            harness = harness or harness_version()
            record["harness"] = harness
        settings[unit] = record | {"asks": asks}
    return settings


def harness_version() -> dict:
    """lmms-eval's version ("not installed": the step then says how to install it) and the
    content of the probe tasks' YAMLs evip ships."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    yamls = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
             for path in sorted(TASK_YAMLS.glob("*.yaml"))}  # fmt: skip
    try:
        installed = version("lmms-eval")
    except PackageNotFoundError:
        installed = "not installed"
    return {"lmms_eval": installed, "tasks": yamls}


def probe_exists(probe: str) -> bool:
    return all(storage.exists(storage.join(probe, name)) for name in PROBE_FILES)


def check_loadable(weights: str) -> None:
    """Raises ValueError when the checkpoint folder's config is not one evip loads (read from
    its config.json alone: no weights move)."""
    from model.configuration import MonoInternVLConfig

    try:
        config = storage.read_json(storage.join(weights, "config.json"))
        MonoInternVLConfig(**config)
    except Exception as error:
        raise ValueError(f"evaluate: checkpoint {weights} does not load: {error}") from error
    if config.get("model_type") != MonoInternVLConfig.model_type:
        raise ValueError(f"evaluate: checkpoint {weights} is a {config.get('model_type')!r} "
                         f"model, not evip's {MonoInternVLConfig.model_type!r}")  # fmt: skip


def evaluate_checkpoints(folder: str, checkpoints: dict[str, str], probe: str | None,
                         options: EvalOptions) -> dict[str, dict]:  # fmt: skip
    """{name: figures} of every checkpoint folder in `checkpoints` ({name: weights URL}).

    Each part is recorded in `folder`; a part whose record matches its weights and settings is
    read back instead of evaluated again. Before any Ray task starts: the probe must exist,
    every checkpoint be complete and load, every harness task be known.
    """
    from pipelines.evaluate.harness import check_tasks

    if probe is not None and not probe_exists(probe):
        raise FileNotFoundError(f"evaluate: probe {probe} lacks one of {PROBE_FILES}")
    if probe is None and set(options.harness_tasks) & set(PROBE_TASKS):
        raise ValueError(f"evaluate: harness tasks {sorted(PROBE_TASKS)} ask the probe: set "
                         "evaluate.probe (the demo draws its own)")  # fmt: skip
    units = evaluation_units(checkpoints, probe, options)
    settings = evaluation_settings(units, probe, options)
    missing = sorted({units[unit][1] for unit, wanted in settings.items() if wanted is None})
    if missing:
        raise ValueError(f"evaluate: checkpoints not complete: {missing}")
    for url in checkpoints.values():
        check_loadable(url)
    defaults = options.harness_tasks and check_tasks(list(options.harness_tasks),
                                                     list(options.harness_include))  # fmt: skip
    run_units(UnitWork(folder, "evaluate checkpoints", units, settings.__getitem__,
                       _evaluate, shared=(folder, probe, options, bool(defaults)),
                       resources=Resources(options.cpus, options.gpus,
                                           max_in_flight=len(checkpoints) or 1, retries=0),
                       together=lambda unit: units[unit][0]))  # fmt: skip
    parts: dict[str, dict] = {name: {} for name in checkpoints}
    for unit, (name, _, part) in units.items():
        parts[name][part] = storage.read_json(storage.join(folder, f"{unit}.json"))
    return {name: merged(checkpoints[name], parts[name]) for name in checkpoints}


def _evaluate(shared, units: list[tuple[str, str, str]]) -> list[dict]:
    """The parts of one checkpoint still to do, on the model loaded once."""
    folder, probe, options, defaults = shared
    ask = load_asker(units[0][1], options)
    covered = []
    for name, _, part in units:
        figures = part_figures(ask, part, probe, options, defaults)
        storage.write_json(figures, storage.join(folder, f"{name}@{part}.json"))
        covered.append({"figures": f"{name}@{part}.json"})
    return covered
