"""From one kept sample to one training conversation, per the stage spec (pure functions).

A sample here is a dict: sample_id, alt_text, caption / fallback (teacher, S1.2), and the source's
ground truth where it has some (gt_description, gt_objects, gt_text; original_width/height). The
conversation is LLaVA-style, as the InternVL fine-tuning scripts read it:
`[{"from": "human", "value": "<image>\\n…"}, {"from": "gpt", "value": "…"}]`.
Grounding answers use InternVL's `<ref>…</ref><box>[[x1, y1, x2, y2]]</box>`, coordinates
normalised to 0–1000.
"""

from __future__ import annotations

import hashlib
import json

from pipelines.stages.spec import TASKS, StageSpec

IMAGE = "<image>"
TASK_PROMPTS = {
    "caption": "Provide a one-sentence caption for the provided image.",
    "grounding": "Please provide the bounding box coordinate of the region this sentence "
                 "describes: <ref>{phrase}</ref>",
    "ocr": "What is the text in the image? Answer with the text only.",
}  # fmt: skip


def uniform(seed: int, salt: str, sample_id: str) -> float:
    """A number in [0, 1) fixed by (seed, salt, sample id): sampling without shared state."""
    digest = hashlib.sha256(f"{seed}/{salt}/{sample_id}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def conversation(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"{IMAGE}\n{question}"}, {"from": "gpt", "value": answer}]


def _objects(sample: dict) -> list[dict]:
    try:
        return json.loads(sample.get("gt_objects") or "[]")
    except (TypeError, ValueError):
        return []


def box_1000(box: list[float], width: int, height: int) -> list[int]:
    x1, y1, x2, y2 = box
    scale = [1000 / width, 1000 / height, 1000 / width, 1000 / height]
    return [min(1000, max(0, round(v * s))) for v, s in zip((x1, y1, x2, y2), scale)]


def can_do(task: str, sample: dict) -> bool:
    """Whether the sample has what the task's answer needs."""
    if task == "ocr":
        return bool((sample.get("gt_text") or "").strip())
    if task == "grounding":
        return bool(_objects(sample)) and bool(sample.get("original_width"))
    return True


def choose_task(spec: StageSpec, sample: dict) -> str:
    """The sample's task, drawn with the spec's shares; a task it cannot do falls to captioning."""
    total = sum(spec.tasks.values())
    u, edge = uniform(spec.seed, "task", sample["sample_id"]) * total, 0.0
    for task in TASKS:
        edge += spec.tasks.get(task, 0.0)
        if u < edge:
            return task if can_do(task, sample) else "caption"
    return "caption"


def caption_text(sample: dict) -> str:
    """The teacher caption (the alt-text where recaption fell back), else the alt-text."""
    return sample.get("caption") or sample.get("alt_text") or ""


def render(spec: StageSpec, sample: dict) -> tuple[str, list[dict]]:
    """(task, conversation) of one sample in this stage."""
    if spec.text == "alt_text":
        return "caption", conversation(spec.prompt, sample["alt_text"])
    if spec.text == "teacher_caption":
        return "caption", conversation(spec.prompt, caption_text(sample))
    task = choose_task(spec, sample)
    if task == "ocr":
        return task, conversation(TASK_PROMPTS["ocr"], sample["gt_text"].strip())
    if task == "grounding":
        objects = _objects(sample)
        target = objects[int(uniform(spec.seed, "object", sample["sample_id"]) * len(objects))]
        phrase = f"{target['colour']} {target['shape']}"
        box = box_1000(target["box"], sample["original_width"], sample["original_height"])
        answer = f"<ref>{phrase}</ref><box>[[{box[0]}, {box[1]}, {box[2]}, {box[3]}]]</box>"
        return task, conversation(TASK_PROMPTS["grounding"].format(phrase=phrase), answer)
    return "caption", conversation(TASK_PROMPTS["caption"], caption_text(sample))
