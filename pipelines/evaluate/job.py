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


def evaluation_settings(weights: str, probe: str, options: EvalOptions) -> dict | None:
    """What an evaluation's figures are made from, by content not place (a run root copied
    elsewhere evaluates nothing again): what made the weights, the probe's files (size and
    version) and the options; None while the weights are not complete."""
    made_with = checkpoint(weights).settings_hash
    if made_with is None or not probe_exists(probe):
        return None
    files = {name: storage.fingerprint(storage.join(probe, name)) for name in PROBE_FILES}
    return {"made_with": made_with, "probe": files, "options": options.model_dump(mode="json")}


def probe_exists(probe: str) -> bool:
    return all(storage.exists(storage.join(probe, name)) for name in PROBE_FILES)


def evaluate_checkpoints(folder: str, checkpoints: dict[str, str], probe: str,
                         options: EvalOptions) -> dict[str, dict]:  # fmt: skip
    """{name: figures} of every checkpoint folder in `checkpoints` ({name: weights URL}).

    Results are recorded in `folder` under each name; a name whose record matches its weights
    and options is read back instead of evaluated again.
    """
    if not probe_exists(probe):
        raise FileNotFoundError(f"evaluate: probe {probe} lacks one of {PROBE_FILES}")
    settings = {name: evaluation_settings(url, probe, options)
                for name, url in checkpoints.items()}  # fmt: skip
    missing = [checkpoints[name] for name, wanted in settings.items() if wanted is None]
    if missing:
        raise ValueError(f"evaluate: checkpoints not complete: {missing}")
    units = {name: (name, url) for name, url in checkpoints.items()}
    run_units(UnitWork(folder, "evaluate checkpoints", units, settings.__getitem__,
                       _evaluate, shared=(folder, probe, options),
                       resources=Resources(options.cpus, max_in_flight=len(checkpoints) or 1,
                                           retries=0)))  # fmt: skip
    return {name: storage.read_json(storage.join(folder, f"{name}.json")) for name in checkpoints}


def _evaluate(shared, unit: tuple[str, str]) -> dict:
    (folder, probe, options), (name, weights) = shared, unit
    figures = evaluate_weights(weights, probe, options)
    storage.write_json(figures, storage.join(folder, f"{name}.json"))
    return {"figures": f"{name}.json"}
