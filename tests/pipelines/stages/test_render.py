"""Rendering one sample per stage spec: prompts, answers, task shares, grounding boxes."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from pipelines.stages.render import TASK_PROMPTS, render
from pipelines.stages.spec import CONCEPT_PROMPT, StageShardOptions, StageSpec


def _sample(i: int, **extra) -> dict:
    objects = [{"shape": "circle", "colour": "red", "box": [10, 20, 110, 220]}]
    return {"sample_id": f"{i:016x}", "alt_text": f"alt {i}", "caption": f"teacher {i}",
            "fallback": False, "gt_objects": json.dumps(objects), "gt_text": "HELLO",
            "original_width": 400, "original_height": 400, **extra}  # fmt: skip


def test_alt_text_and_teacher_caption_stages():
    s11 = StageSpec(name="S1.1", text="alt_text")
    task, talk = render(s11, _sample(1))
    assert task == "caption"
    assert talk == [{"from": "human", "value": f"<image>\n{CONCEPT_PROMPT}"},
                    {"from": "gpt", "value": "alt 1"}]  # fmt: skip
    _, talk = render(StageSpec(name="S1.2", text="teacher_caption", max_patches=1792), _sample(2))
    assert talk[1]["value"] == "teacher 2"


def test_task_shares_ground_truth_answers_and_fallback_to_captioning():
    shares = {"caption": 0.5, "grounding": 0.2, "ocr": 0.3}
    spec = StageSpec(name="S1.3", text="tasks", tasks=shares)
    counts = Counter(render(spec, _sample(i))[0] for i in range(4000))
    for task, share in spec.tasks.items():
        assert abs(counts[task] / 4000 - share) < 0.03, counts
    by_task = {render(spec, _sample(i))[0]: render(spec, _sample(i))[1] for i in range(50)}
    assert by_task["ocr"][1]["value"] == "HELLO"
    assert by_task["ocr"][0]["value"] == "<image>\n" + TASK_PROMPTS["ocr"]
    grounding = by_task["grounding"]
    assert "<ref>red circle</ref>" in grounding[0]["value"]
    assert grounding[1]["value"] == "<ref>red circle</ref><box>[[25, 50, 275, 550]]</box>"
    no_text = Counter(render(spec, _sample(i, gt_text=""))[0] for i in range(1000))
    assert no_text["ocr"] == 0 and no_text["caption"] > 700  # OCR falls back to captioning
    assert re.search(r"\[\[\d+, \d+, \d+, \d+\]\]", grounding[1]["value"])


def test_specs_are_validated():
    with pytest.raises(ValueError, match="needs `tasks`"):
        StageSpec(name="x", text="tasks")
    with pytest.raises(ValueError, match="must not shrink"):
        StageShardOptions(stages=[StageSpec(name="a", text="alt_text", max_patches=2000),
                                  StageSpec(name="b", text="alt_text", max_patches=1000)])
    with pytest.raises(ValueError, match="repeat"):
        StageSpec(name="x", text="alt_text", sources=[{"name": "a"}, {"name": "a"}])
    assert StageSpec(name="x", text="alt_text", sources=[{"name": "a", "weight": 3},
                     {"name": "b"}]).weights(["a", "b", "c"]) == {"a": 0.75, "b": 0.25}
