"""Held-out evaluation of one checkpoint folder against a probe (`pipelines/synthetic/probe.py`).

- `heldout_loss`: next-token loss of the true description given the image and the caption prompt
  (teacher forcing, the training loss on pairs the run never saw); `image_gain`: how much lower
  it is than with the wrong image (each description scored with the next one's): what the image
  tells the model;
- `caption_accuracy` (and per shape / colour / text): greedy captions scored by `scoring`;
- `grounding_accuracy`: the box answered for the first object's phrase, right at IoU >= 0.5;
- `text_perplexity`: of held-out prose, text only (delta tuning must leave it bit-for-bit alone);
- `harness`: lmms-eval's figures of the configured tasks (`harness.py`), from the same loaded
  model; a run without a probe has only these.
Prompts are tokenized exactly as the training loader tokenizes conversations.
"""

from __future__ import annotations

import io
import json

from PIL import Image
from pydantic import Field

from model.options import FrozenOptions
from pipelines import storage
from pipelines.evaluate.scoring import accuracy, iou, parse_box, score_caption
from pipelines.stages.render import TASK_PROMPTS, box_1000
from pipelines.stages.spec import CONCEPT_PROMPT


class EvalOptions(FrozenOptions):
    """The held-out evaluation after each stage and at each stage's data milestones."""

    probe: str | None = None
    """Probe folder (images.parquet + text.parquet); null: the run's synthetic probe (demo)."""
    images: int = Field(48, gt=0)
    """Probe images captioned (and grounded)."""
    texts: int = Field(32, gt=0)
    """Held-out prose rows for perplexity."""
    prompt: str = CONCEPT_PROMPT
    """Caption prompt (the one S1.1 and S1.2 train with)."""
    max_new_tokens: int = Field(40, gt=0)
    """Longest generated answer."""
    max_patches: int = Field(1280, gt=0)
    """Visual tokens per image at most."""
    batch_size: int = Field(16, gt=0)
    """Images per generation batch."""
    cpus: float = Field(1.0, gt=0)
    """CPUs of each evaluation task (one per checkpoint)."""
    gpus: float = Field(0.0, ge=0)
    """GPUs of each evaluation task; > 0 loads the checkpoint on CUDA."""
    harness_tasks: tuple[str, ...] = ()
    """lmms-eval tasks answered by every checkpoint, e.g. [evip_probe] (the probe's captioning
    and grounding, offline) or [mmbench_en_dev, textvqa_val, chartqa, ocrbench] (fetched from
    the hub). Needs lmms-eval: pip install --no-deps -r configs/harness-requirements.txt."""
    harness_include: tuple[str, ...] = ()
    """Local folders of further lmms-eval task YAMLs (its --include_path)."""
    harness_limit: int | None = Field(None, gt=0)
    """Documents per harness task at most (its --limit); null: every document."""


PROBE_FILES = ("images.parquet", "text.parquet")
"""A probe folder: drawn or photographed images with their truth, and held-out prose."""


def load_probe(url: str, options: EvalOptions) -> tuple[list[dict], list[str]]:
    """(image rows, prose) of the probe, cut to the configured sizes."""
    images = storage.read_parquet(storage.join(url, PROBE_FILES[0])).to_pylist()
    texts = storage.read_parquet(storage.join(url, PROBE_FILES[1])).column("text").to_pylist()
    return images[: options.images], texts[: options.texts]


def truth_of(row: dict) -> dict:
    return {"objects": json.loads(row["gt_objects"]), "text": row["gt_text"] or None,
            "description": row["description"]}  # fmt: skip


def grounding_prompt(truth: dict) -> str:
    """The grounding question of a probe scene: where its first object is."""
    first = truth["objects"][0]
    return TASK_PROMPTS["grounding"].format(phrase=f"{first['colour']} {first['shape']}")


def grounded(answer: str, row: dict) -> bool:
    """Whether a grounding answer's box hits the scene's first object (IoU >= 0.5)."""
    box = parse_box(answer)
    truth = json.loads(row["gt_objects"])[0]["box"]
    return box is not None and iou(box, box_1000(truth, row["width"], row["height"])) >= 0.5


PROBE_PART = "probe"
"""The part of a checkpoint's evaluation that evip's own probe loop makes; every other part is
one lmms-eval task."""


def evaluation_parts(probe: str | None, options: EvalOptions) -> list[str]:
    """What is evaluated of each checkpoint, each recorded alone: the probe (with one), then
    every harness task."""
    return ([PROBE_PART] if probe is not None else []) + list(options.harness_tasks)


def load_asker(weights: str, options: EvalOptions):
    """The checkpoint folder loaded once for every part (on CUDA when `options.gpus`)."""
    from pipelines.evaluate.asker import Asker
    from pipelines.model_folders import local_model_folder

    return Asker.from_folder(local_model_folder(weights), options.max_patches,
                             options.batch_size, "cuda" if options.gpus > 0 else "cpu")  # fmt: skip


def part_figures(ask, part: str, probe: str | None, options: EvalOptions,
                 harness_defaults: bool = True) -> dict:  # fmt: skip
    """The figures of one part: the probe's (module docstring), or {task: {metric: value}} of
    one lmms-eval task (a group gives its subtasks; `harness_defaults`: whether lmms-eval's
    own tasks are needed)."""
    from pipelines.evaluate.harness import run_tasks

    if part == PROBE_PART:
        return probe_figures(ask, probe, options)
    asks = {"max_new_tokens": options.max_new_tokens, "prompt": options.prompt}
    return run_tasks(ask, [part], list(options.harness_include), probe, harness_defaults,
                     options.harness_limit, asks)  # fmt: skip


def merged(weights: str, parts: dict[str, dict]) -> dict:
    """One checkpoint's figures from its parts: the probe's at the top, the harness tasks'
    under `harness` (absent without harness tasks)."""
    figures = {"weights": weights, **parts.get(PROBE_PART, {})}
    harness = {task: metrics for part, figures in parts.items() if part != PROBE_PART
               for task, metrics in figures.items()}  # fmt: skip
    return figures | ({"harness": harness} if harness else {})


def evaluate_weights(weights: str, probe: str | None, options: EvalOptions) -> dict:
    """Every figure of the module docstring for the checkpoint folder `weights` (with a probe),
    the first captions next to their truth (`samples`), and `harness`: {task: {metric: value}}
    of `options.harness_tasks`."""
    ask = load_asker(weights, options)
    return merged(weights, {part: part_figures(ask, part, probe, options)
                            for part in evaluation_parts(probe, options)})  # fmt: skip


def probe_figures(ask, probe: str, options: EvalOptions) -> dict:
    """The probe's figures (module docstring) of one loaded checkpoint."""
    rows, prose = load_probe(probe, options)
    images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
    truths = [truth_of(r) for r in rows]
    captions = ask.answers(images, [options.prompt] * len(images), options.max_new_tokens)
    scores = [score_caption(c, t) for c, t in zip(captions, truths)]
    boxes = ask.answers(images, [grounding_prompt(t) for t in truths], options.max_new_tokens)
    hits = [grounded(answer, row) for answer, row in zip(boxes, rows)]
    descriptions = [t["description"] for t in truths]
    loss = ask.loss(images, options.prompt, descriptions)
    return {
        **accuracy(scores),
        "grounding_accuracy": sum(hits) / len(hits),
        "heldout_loss": loss,
        "image_gain": ask.loss(images[1:] + images[:1], options.prompt, descriptions) - loss,
        "text_perplexity": ask.perplexity(prose),
        "samples": [{"caption": c, "truth": t["description"]}
                    for c, t in zip(captions[:6], truths)],  # fmt: skip
    }
