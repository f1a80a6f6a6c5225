"""S1.3 as the paper builds it: the teacher's captions of web images mixed with the grounding and
OCR conversations of annotated datasets (an InternVL meta JSON) at a configured share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image
from pydantic import ValidationError

from pipelines.stages.build import build_stage, sample_rates
from pipelines.stages.spec import StageSpec
from tests.pipelines.stages.web import captioned_web


def _grounding_and_ocr(folder: Path, rows: int) -> Path:
    """A meta JSON of two datasets of `rows` conversations each (InternVL's formats)."""
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "white").save(folder / "images" / "a.jpg")
    ask = {"grounding": "<image>\nPlease provide the bounding box of <ref>the sign</ref>",
           "ocr": "<image>\nWhat is written?"}  # fmt: skip
    answer = {"grounding": "<ref>the sign</ref><box>[[10, 20, 300, 400]]</box>", "ocr": "OPEN"}
    meta = {}
    for name in ("grounding", "ocr"):
        lines = [json.dumps({"id": i, "image": "a.jpg", "conversations": [
            {"from": "human", "value": ask[name]}, {"from": "gpt", "value": answer[name]}]})
            for i in range(rows)]  # fmt: skip
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        meta[name] = {"root": "images", "annotation": f"{name}.jsonl", "repeat_time": 1}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "meta.json"


def test_the_shares_hold_and_too_few_dataset_rows_take_fewer_web_samples():
    spec = StageSpec(name="S1.3", text="tasks", tasks={"caption": 1.0}, meta="m.json",
                     meta_share=0.461)  # fmt: skip
    inputs = {"web": {"kept": 539, "weight": 1.0}}
    web, meta_rate, expected = sample_rates(spec, inputs, 10_000)
    assert web == {"web": 1.0} and meta_rate == pytest.approx(0.0461)
    assert expected == pytest.approx(1000)
    web, meta_rate, expected = sample_rates(spec, inputs, 100)
    assert meta_rate == 1.0 and web["web"] * 539 == pytest.approx(100 * 0.539 / 0.461)
    with pytest.raises(ValidationError, match="meta_share"):
        StageSpec(name="S1.3", text="tasks", tasks={"caption": 1.0}, meta="m.json")
    with pytest.raises(ValidationError, match="meta"):
        StageSpec(name="S1.1", text="alt_text", meta="m.json")


def test_a_tasks_stage_mixes_in_instruction_datasets_at_its_share(ray_local, tmp_path):
    layout, _, _ = captioned_web(tmp_path / "run", 60)
    meta = _grounding_and_ocr(tmp_path / "data", 150)
    spec = StageSpec(name="S1.3", text="tasks", tasks={"caption": 1.0}, meta=str(meta),
                     meta_share=0.5, samples_per_shard=32, max_patches=3328)  # fmt: skip
    manifest = build_stage(layout, spec, ["web"], "tiny")
    assert manifest["per_task"]["caption"] == 60  # every web sample, captioned by the teacher
    mixed = manifest["per_task"]["conversation"]
    assert abs(mixed - 60) <= 20, manifest  # half of the stage, drawn from the 300 rows
    assert manifest["per_source"]["grounding"] + manifest["per_source"]["ocr"] == mixed
    tars = sorted(str(p) for p in Path(layout.stages("S1.3")).glob("shard-*.tar"))
    samples = [json.loads(s["json"]) for s in wds.WebDataset(tars, shardshuffle=False)]
    answers = [s["conversations"][-1]["value"] for s in samples]
    assert sum(a.startswith("teacher") for a in answers) == 60
    assert sum("<box>[[10, 20, 300, 400]]</box>" in a for a in answers) > 0
    assert [s["source"] for s in samples[:40]].count("web") < 40  # shuffled together
    # The datasets are inputs of the stage: another meta rebuilds it.
    again = build_stage(layout, spec.model_copy(update={"meta_share": 0.25}), ["web"], "tiny")
    assert again["per_task"]["conversation"] < mixed
