"""Scoring generated text against a drawn scene's ground truth: pure functions, no model.

A caption is scored on facts a caption of the scene must state: every object's shape word, every
object's colour word, and the written word when there is one (case-insensitive, whole words).
Grounding is right when the predicted box overlaps the true one with IoU >= 0.5 (InternVL's rule).
"""

from __future__ import annotations

import re

FACT_KINDS = ("shape", "colour", "text")
_BOX = re.compile(r"\[\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]\]")


def facts(truth: dict) -> list[tuple[str, str]]:
    """(kind, word) pairs a caption of the scene should contain."""
    out = [("shape", o["shape"]) for o in truth["objects"]]
    out += [("colour", o["colour"]) for o in truth["objects"]]
    if truth.get("text"):
        out.append(("text", truth["text"]))
    return out


def score_caption(caption: str, truth: dict) -> dict[str, list[int]]:
    """{kind: [facts stated, facts]} of one caption."""
    words = set(re.findall(r"[a-z0-9]+", caption.lower()))
    score = {kind: [0, 0] for kind in FACT_KINDS}
    for kind, word in facts(truth):
        score[kind][1] += 1
        score[kind][0] += word.lower() in words
    return score


def accuracy(scores: list[dict[str, list[int]]]) -> dict[str, float]:
    """caption_accuracy (all facts) and one accuracy per kind, over many captions."""
    totals = {kind: [sum(s[kind][0] for s in scores), sum(s[kind][1] for s in scores)]
              for kind in FACT_KINDS}  # fmt: skip
    hits, count = sum(t[0] for t in totals.values()), sum(t[1] for t in totals.values())
    out = {"caption_accuracy": hits / count if count else 0.0}
    out |= {f"{kind}_accuracy": h / n if n else 0.0 for kind, (h, n) in totals.items()}
    return out


def chance_accuracy(truths: list[dict]) -> float:
    """Caption accuracy of a model that ignores the image: each scene's true description scored
    against the next scene (a fluent caption of the wrong picture)."""
    if len(truths) < 2:
        return 0.0
    shifted = truths[1:] + truths[:1]
    scores = [score_caption(other["description"], t) for other, t in zip(shifted, truths)]
    return accuracy(scores)["caption_accuracy"]


def parse_box(answer: str) -> tuple[int, int, int, int] | None:
    """The first `[[x1, y1, x2, y2]]` box (0-1000 coordinates) in a model's answer."""
    match = _BOX.search(answer)
    return tuple(int(v) for v in match.groups()) if match else None


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
