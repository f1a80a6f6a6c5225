"""Evaluating many checkpoints at once: one Ray task per checkpoint folder (thin adapter).

A checkpoint's evaluation is recorded beside the run's other reports (`reports/eval/`) with the
checkpoint's own completion settings, so an evaluation already made of the same weights is read,
not redone.
"""

from __future__ import annotations

from tqdm import tqdm

from pipelines import storage
from pipelines.completion import CompletionLog
from pipelines.evaluate.evaluate import EvalOptions, evaluate_weights
from pipelines.outputs import checkpoint


def evaluation_settings(weights: str, probe: str, options: EvalOptions) -> dict | None:
    """What an evaluation's figures are made from; None while the weights are not complete."""
    made_with = checkpoint(weights).settings_hash
    if made_with is None:
        return None
    return {"weights": weights, "made_with": made_with, "probe": probe,
            "options": options.model_dump(mode="json")}  # fmt: skip


def evaluate_checkpoints(folder: str, checkpoints: dict[str, str], probe: str,
                         options: EvalOptions) -> dict[str, dict]:  # fmt: skip
    """{name: figures} of every checkpoint folder in `checkpoints` ({name: weights URL}).

    Results are recorded in `folder` under each name; a name whose record matches its weights
    and options is read back instead of evaluated again.
    """
    import ray

    log = CompletionLog(folder)
    settings = {name: evaluation_settings(url, probe, options)
                for name, url in checkpoints.items()}  # fmt: skip
    missing = [checkpoints[name] for name, wanted in settings.items() if wanted is None]
    if missing:
        raise ValueError(f"evaluate: checkpoints not complete: {missing}")
    todo = [name for name in checkpoints if not log.is_complete(name, settings[name])]
    task = ray.remote(num_cpus=options.cpus)(_evaluate_and_record)
    pending = [task.remote(folder, name, checkpoints[name], probe, options, settings[name])
               for name in todo]  # fmt: skip
    with tqdm(total=len(pending), desc="evaluate checkpoints", unit="checkpoint") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raises the task's error
            bar.update(len(done))
    return {name: storage.read_json(storage.join(folder, f"{name}.json")) for name in checkpoints}


def _evaluate_and_record(folder, name, weights, probe, options, settings) -> None:
    figures = evaluate_weights(weights, probe, options)
    storage.write_json(figures, storage.join(folder, f"{name}.json"))
    CompletionLog(folder).write(name, settings, covered={"figures": f"{name}.json"})
