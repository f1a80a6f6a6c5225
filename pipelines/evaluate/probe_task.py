"""The held-out probe as lmms-eval tasks (`evip_probe_caption`, `evip_probe_grounding`, the
group `evip_probe`): documents are the probe's image rows (image bytes, description, `gt_*`
truth), scored by evip's own rules (`pipelines.evaluate.scoring`), so the harness's numbers mean
what `evip evaluate`'s caption and grounding accuracies mean.

The task YAMLs ship in `harness_tasks/`; `write_probe_task` makes a task folder of a probe (its
`images.parquet` beside the YAMLs) that `lmms-eval --include_path` reads:

    python -m pipelines.evaluate.probe_task runs/demo/eval/probe /tmp/evip_tasks
    lmms-eval --model evip --model_args pretrained=runs/demo/checkpoints/S2/final \
        --tasks evip_probe --include_path /tmp/evip_tasks
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from PIL import Image

from pipelines import storage
from pipelines.evaluate.evaluate import grounded, grounding_prompt, truth_of
from pipelines.evaluate.scoring import FACT_KINDS, score_caption
from pipelines.stages.spec import CONCEPT_PROMPT


def doc_to_visual(doc: dict) -> list:
    return [Image.open(io.BytesIO(doc["image"])).convert("RGB")]


def caption_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return (lmms_eval_specific_kwargs or {}).get("prompt", CONCEPT_PROMPT)


def grounding_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return grounding_prompt(truth_of(doc))


def caption_results(doc: dict, results: list[str]) -> dict:
    """[facts stated, facts] of the caption, all facts and per kind."""
    score = score_caption(results[0], truth_of(doc))
    out = {f"{kind}_accuracy": score[kind] for kind in FACT_KINDS}
    out["caption_accuracy"] = [sum(s[0] for s in score.values()), sum(s[1] for s in score.values())]
    return out


def fact_share(items: list[list[int]]) -> float:
    """Facts stated over facts, summed over every caption (as `scoring.accuracy`)."""
    total = sum(item[1] for item in items)
    return sum(item[0] for item in items) / total if total else 0.0


def grounding_results(doc: dict, results: list[str]) -> dict:
    return {"grounding_accuracy": float(grounded(results[0], doc))}


TASK_YAMLS = Path(__file__).parent / "harness_tasks"
DEFAULT_TOKENS = 40
"""The answer length the shipped YAMLs set (`EvalOptions.max_new_tokens`'s default)."""
PROBE_TASKS = ("evip_probe", "evip_probe_caption", "evip_probe_grounding")
"""The task names the shipped YAMLs define (the group first)."""


def write_probe_task(probe: str, dest: str | Path, max_new_tokens: int = DEFAULT_TOKENS,
                     prompt: str = CONCEPT_PROMPT) -> Path:  # fmt: skip
    """A local lmms-eval task folder for the probe folder at `probe` (local or object store):
    the shipped YAMLs, set to the evaluation's answer length and caption prompt (so the harness
    asks what evip's probe loop asks), and a copy of its `images.parquet`. Returns `dest`."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for yaml in sorted(TASK_YAMLS.glob("*.yaml")):
        text = yaml.read_text().replace(f"max_new_tokens: {DEFAULT_TOKENS}",
                                        f"max_new_tokens: {max_new_tokens}")  # fmt: skip
        text = text.replace(f'prompt: "{CONCEPT_PROMPT}"', f"prompt: {json.dumps(prompt)}")
        (dest / yaml.name).write_text(text)
    (dest / "images.parquet").write_bytes(storage.read_bytes(storage.join(probe, "images.parquet")))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.evaluate.probe_task",
        description="Write an lmms-eval task folder (tasks evip_probe, evip_probe_caption, "
        "evip_probe_grounding) for a probe folder; pass it to lmms-eval's --include_path.")
    parser.add_argument("probe", help="probe folder with images.parquet (local path or s3://)")
    parser.add_argument("dest", help="local folder to write the task YAMLs and data into")
    args = parser.parse_args(argv)
    print(write_probe_task(args.probe, args.dest))


if __name__ == "__main__":
    main()
