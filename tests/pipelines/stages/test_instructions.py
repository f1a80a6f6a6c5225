"""S2 instruction data: an InternVL meta JSON with a fractional repeat_time, text-only rows and
malformed rows (reported with file and line, counted, skipped), into stage shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from pipelines.layout import RunLayout
from pipelines.stages.build import build_stage
from pipelines.stages.instructions import MetaError, copies, read_meta
from pipelines.stages.spec import StageSpec


def _write_meta(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "blue").save(folder / "images" / "a.jpg")
    vqa = []
    for i in range(200):
        vqa.append({"id": f"vqa-{i}", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "<image>\nwhat colour?"}, {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "sure?"}, {"from": "gpt", "value": "yes"}]})
    lines = [json.dumps(r) for r in vqa]
    (folder / "vqa.jsonl").write_text("\n".join(lines) + "\n")
    text = [json.dumps({"id": f"t-{i}", "conversations": [{"from": "human", "value": "hi"},
                        {"from": "gpt", "value": f"hello {i}"}]}) for i in range(10)]
    text.insert(3, "{not json")
    text.insert(6, json.dumps({"id": "img-missing", "image": "nope.jpg", "conversations": [
        {"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]}))
    text.append(json.dumps({"id": "two-images", "image": ["a.jpg", "a.jpg"], "conversations": [
        {"from": "human", "value": "<image> <image> same?"}, {"from": "gpt", "value": "yes"}]}))
    (folder / "text.jsonl").write_text("\n".join(text) + "\n")
    meta = {"vqa": {"root": "images", "annotation": "vqa.jsonl", "data_augment": False,
                    "repeat_time": 0.5, "length": 200},
            "chat": {"root": "images", "annotation": "text.jsonl", "data_augment": False,
                     "repeat_time": 2, "length": 13}}  # fmt: skip
    path = folder / "meta.json"
    path.write_text(json.dumps(meta))
    return path


def test_repeat_time_is_a_per_row_draw():
    assert copies(2.0, 0, "d", 5) == 2 and copies(0.0, 0, "d", 5) == 0
    kept = sum(copies(0.25, 0, "d", line) for line in range(4000))
    assert abs(kept / 4000 - 0.25) < 0.03


def test_bad_meta_fails_before_any_work(tmp_path):
    with pytest.raises(MetaError, match="does not exist"):
        read_meta(str(tmp_path / "none.json"))
    (tmp_path / "m.json").write_text(json.dumps({"d": {"annotation": "missing.jsonl"}}))
    with pytest.raises(MetaError, match="annotation"):
        read_meta(str(tmp_path / "m.json"))


@pytest.mark.slow
def test_s2_stage_from_a_meta_json(ray_local, tmp_path, capsys):
    meta = _write_meta(tmp_path / "data")
    spec = StageSpec(name="S2", text="conversations", meta=str(meta), max_patches=6400,
                     samples_per_shard=40)  # fmt: skip
    layout = RunLayout(tmp_path / "run")
    manifest = build_stage(layout, spec, [], "internvl")
    half = sum(copies(0.5, 0, "vqa", line) for line in range(200))
    assert manifest["per_source"] == {"vqa": half, "chat": 22}  # 10 text + 1 two-image, twice
    assert manifest["malformed_rows"] == 2  # each bad line counted once
    out = capsys.readouterr().out
    assert "text.jsonl:4: JSONDecodeError" in out and "text.jsonl:7: FileNotFoundError" in out
    tars = sorted(str(p) for p in (tmp_path / "run/stages/S2").glob("shard-*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    text_only = [s for s in samples if "jpg" not in s]
    assert len(text_only) == 20 and len(samples) == half + 22
    assert sum("1.jpg" in s for s in samples) == 2  # the two-image row's second image, twice
    with_image = next(s for s in samples if "jpg" in s)
    assert Image.open(io.BytesIO(with_image["jpg"])).size == (64, 48)
    talk = json.loads(with_image["json"])["conversations"]
    assert [t["value"] for t in talk if t["from"] == "gpt"] == ["blue", "yes"]
    assert build_stage(layout, spec, [], "internvl") == manifest  # unchanged: nothing to do


def test_rows_read_as_the_official_code_reads_them(tmp_path, monkeypatch):
    """Every line despite a short `length`; `<image>` prepended where an image row lacks it;
    turns stripped; a relative root found from the working directory when not beside the meta."""
    from pipelines.stages.instructions import chunks, read_rows

    (tmp_path / "cwd" / "imgs").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "cwd" / "imgs" / "a.jpg")
    (tmp_path / "meta").mkdir()
    rows = [{"id": i, "image": "a.jpg", "conversations": [
        {"from": "human", "value": "  what is it? "}, {"from": "gpt", "value": " a square \n"}]}
        for i in range(5)]  # fmt: skip
    (tmp_path / "meta" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "meta" / "meta.json").write_text(json.dumps(
        {"d": {"root": "imgs", "annotation": "a.jsonl", "length": 2}}))  # fmt: skip
    monkeypatch.chdir(tmp_path / "cwd")
    datasets = read_meta(str(tmp_path / "meta" / "meta.json"))
    assert datasets["d"]["root"] == str(tmp_path / "cwd" / "imgs")
    assert chunks(datasets) == [("d", 0, 5)]
    read = [r for _, r, _, error in read_rows(datasets["d"], "d", 0, 5, seed=0) if not error]
    assert len(read) == 5
    assert [t["value"] for t in read[0]["conversations"]] == ["<image>\nwhat is it?", "a square"]


def test_a_multi_image_row_reads_its_images_in_order(tmp_path):
    from pipelines.stages.instructions import read_rows

    for name, colour in (("a.jpg", "red"), ("b.jpg", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    row = {"id": 0, "image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nsame?"}, {"from": "gpt", "value": "no"}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "meta.json").write_text(json.dumps({"d": {"root": ".", "annotation": "a.jsonl"}}))
    entry = read_meta(str(tmp_path / "meta.json"))["d"]
    [(_, read, images, error)] = list(read_rows(entry, "d", 0, 1, seed=0))
    assert error is None and len(images) == 2
    assert [Image.open(io.BytesIO(i)).getpixel((0, 0))[0] > 128 for i in images] == [True, False]
    assert read["conversations"][0]["value"] == "<image>\n<image>\nsame?"  # nothing prepended
