"""Evaluating many checkpoints at once: one Ray task per checkpoint folder (thin adapter).

A checkpoint's evaluation is recorded beside the run's other reports (`reports/eval/`) with the
checkpoint's own completion settings, so an evaluation already made of the same weights is read,
not redone.
"""

from __future__ import annotations

from pipelines import storage
from pipelines.evaluate.evaluate import PROBE_FILES, EvalOptions, evaluate_weights
from pipelines.outputs import checkpoint
from pipelines.units import Resources, UnitWork, run_units


def evaluation_settings(weights: str, probe: str | None, options: EvalOptions) -> dict | None:
    """What an evaluation's figures are made from, by content not place (a run root copied
    elsewhere evaluates nothing again): what made the weights, the probe's files (size and
    version), the options and, with harness tasks, the harness's version and the probe tasks'
    YAMLs; None while the weights (or the probe) are not complete."""
    made_with = checkpoint(weights).settings_hash
    if made_with is None or (probe is not None and not probe_exists(probe)):
        return None
    files = {} if probe is None else {name: storage.fingerprint(storage.join(probe, name))
                                      for name in PROBE_FILES}  # fmt: skip
    settings = {"made_with": made_with, "probe": files, "options": options.model_dump(mode="json")}
    if options.harness_tasks:
        settings["harness"] = harness_version()
    return settings


def harness_version() -> dict:
    """lmms-eval's version ("not installed": the step then says how to install it) and the
    content of the probe tasks' YAMLs evip ships."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from pipelines.evaluate.probe_task import TASK_YAMLS

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

    Results are recorded in `folder` under each name; a name whose record matches its weights
    and options is read back instead of evaluated again. Before any Ray task starts: the probe
    must exist, every checkpoint be complete and load, every harness task be known.
    """
    from pipelines.evaluate.harness import check_tasks

    if probe is not None and not probe_exists(probe):
        raise FileNotFoundError(f"evaluate: probe {probe} lacks one of {PROBE_FILES}")
    settings = {name: evaluation_settings(url, probe, options)
                for name, url in checkpoints.items()}  # fmt: skip
    missing = [checkpoints[name] for name, wanted in settings.items() if wanted is None]
    if missing:
        raise ValueError(f"evaluate: checkpoints not complete: {missing}")
    for url in checkpoints.values():
        check_loadable(url)
    defaults = options.harness_tasks and check_tasks(list(options.harness_tasks),
                                                     list(options.harness_include))  # fmt: skip
    units = {name: (name, url) for name, url in checkpoints.items()}
    run_units(UnitWork(folder, "evaluate checkpoints", units, settings.__getitem__,
                       _evaluate, shared=(folder, probe, options, bool(defaults)),
                       resources=Resources(options.cpus, options.gpus,
                                           max_in_flight=len(checkpoints) or 1,
                                           retries=0)))  # fmt: skip
    return {name: storage.read_json(storage.join(folder, f"{name}.json")) for name in checkpoints}


def _evaluate(shared, unit: tuple[str, str]) -> dict:
    (folder, probe, options, defaults), (name, weights) = shared, unit
    figures = evaluate_weights(weights, probe, options, defaults)
    storage.write_json(figures, storage.join(folder, f"{name}.json"))
    return {"figures": f"{name}.json"}
