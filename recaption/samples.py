"""What the recaption changed, for the report: alt-text next to the teacher's caption, and, where
the source carries ground truth (the synthetic web), how many facts of each the image bears out."""

from __future__ import annotations

import json

from pipelines import storage
from pipelines.evaluate.scoring import accuracy, score_caption
from pipelines.layout import RunLayout
from pipelines.markdown import table

GROUND_TRUTH = "gt_objects"


def caption_samples(layout: RunLayout, teacher: str, source: str, count: int = 6) -> dict:
    """{"rows": [{"alt_text", "teacher"}] of the first `count` captioned samples, "accuracy":
    {"alt_text", "teacher"} caption accuracy over every captioned sample with ground truth (empty
    without any)}. Reads one caption shard and its raw shard at a time."""
    rows, alt_scores, teacher_scores = [], [], []
    for url in sorted(storage.glob(storage.join(layout.captions(teacher, source), "*.parquet"))):
        shard = int(url.rsplit("/", 1)[1].split(".")[0])
        captions = storage.read_parquet(url).to_pylist()
        raw_url = layout.raw_folder(source).shard(shard, "parquet")
        truth = {}
        if storage.exists(raw_url):  # img2dataset's metadata: the alt-text, any ground truth
            raw = storage.read_parquet(raw_url)
            columns = [c for c in ("key", "caption", GROUND_TRUTH, "gt_text")
                       if c in raw.column_names]  # fmt: skip
            truth = {r["key"]: r for r in raw.select(columns).to_pylist()}
        for row in captions:
            original = truth.get(row["key"], {})
            if len(rows) < count and row["teacher_caption"]:
                rows.append({"alt_text": original.get("caption"),
                             "teacher": row["teacher_caption"]})
            if original.get(GROUND_TRUTH):
                facts = {"objects": json.loads(original[GROUND_TRUTH]),
                         "text": original.get("gt_text") or None}  # fmt: skip
                alt_scores.append(score_caption(original.get("caption") or "", facts))
                teacher_scores.append(score_caption(row["caption"] or "", facts))
    if not alt_scores:
        return {"rows": rows, "accuracy": {}}
    return {"rows": rows, "accuracy": {"alt_text": accuracy(alt_scores)["caption_accuracy"],
                                       "teacher": accuracy(teacher_scores)["caption_accuracy"]}}


def samples_markdown(samples: dict) -> str:
    lines = [table(["alt-text", "teacher caption"],
                   [[r["alt_text"], r["teacher"]] for r in samples["rows"]])]
    quality = samples["accuracy"]
    if quality:
        lines += ["", f"caption accuracy against the ground truth: alt-text "
                      f"{quality['alt_text']:.3f}, teacher {quality['teacher']:.3f}"]  # fmt: skip
    return "\n".join(lines)
