"""Held-out evaluation: scoring rules by hand, and real checkpoints evaluated in Ray tasks."""

from __future__ import annotations

import shutil

import torch

from model.build import build_model
from model.options import ModelOptions, TinyLLMOptions, VisionOptions
from model.param_groups import group_of
from model.tiny import save_tiny_llm
from pipelines import storage
from pipelines.evaluate.evaluate import EvalOptions
from pipelines.evaluate.figures import evaluation_table, milestones_png
from pipelines.evaluate.job import evaluate_checkpoints
from pipelines.evaluate.scoring import accuracy, chance_accuracy, iou, parse_box, score_caption
from pipelines.model_folders import model_folder
from pipelines.synthetic.probe import write_probe

SCENE = {"objects": [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}],
         "text": "SALE", "description": "A red circle and a blue square on a white background, "
                                        'with the word "SALE" written on it.'}  # fmt: skip


def test_a_caption_scores_the_facts_it_states():
    score = score_caption("A red circle next to a green square. sale!", SCENE)
    assert score == {"shape": [2, 2], "colour": [1, 2], "text": [1, 1]}
    figures = accuracy([score, score_caption("nothing here", SCENE)])
    assert figures["caption_accuracy"] == 4 / 10 and figures["colour_accuracy"] == 1 / 4
    assert score_caption(SCENE["description"], SCENE) == {"shape": [2, 2], "colour": [2, 2],
                                                          "text": [1, 1]}  # fmt: skip
    other = {"objects": [{"shape": "triangle", "colour": "red"}], "text": None,
             "description": "A red triangle on a black background."}  # fmt: skip
    # The scene scored with the other's description: 1 of 5 facts (red); the other with ours: 1/2.
    assert chance_accuracy([SCENE, other]) == 2 / 7


def test_boxes_are_parsed_and_compared_by_iou():
    assert parse_box("<ref>red circle</ref><box>[[10, 20, 110, 220]]</box>") == (10, 20, 110, 220)
    assert parse_box("a red circle") is None
    assert iou((0, 0, 100, 100), (0, 0, 100, 100)) == 1.0
    assert iou((0, 0, 100, 100), (50, 0, 150, 100)) == 50 * 100 / 15000


def test_checkpoints_are_evaluated_in_ray_tasks_and_recorded(tmp_path, ray_local):
    options = ModelOptions(tiny_llm=TinyLLMOptions(hidden_size=32, intermediate_size=64),
                           vision=VisionOptions(tile_size=56, vision_hidden_size=16, max_tiles=2))
    torch.manual_seed(0)
    model, tokenizer, processor = build_model(options, save_tiny_llm(tmp_path / "llm",
                                                                     options.tiny_llm))

    def saver(model):
        def save(local):
            model.save_pretrained(local)
            tokenizer.save_pretrained(local)
            processor.save_pretrained(local)
        return save

    checkpoints = str(tmp_path / "checkpoints")
    model_folder(checkpoints, "a", {"v": 1}, saver(model), tmp_path / "cache")
    with torch.no_grad():  # a second checkpoint: only visual weights differ
        for name, param in model.named_parameters():
            if group_of(name) in ("patch_embed", "visual_ffn"):
                param.add_(torch.randn_like(param) * 0.5)
    model_folder(checkpoints, "b", {"v": 2}, saver(model), tmp_path / "cache")
    probe = write_probe(str(tmp_path / "probe"), seed=0, images=4, texts=3)
    eval_options = EvalOptions(images=4, texts=3, max_new_tokens=6, batch_size=3, cpus=0.5)
    folder = str(tmp_path / "reports" / "eval")
    wanted = {"a": storage.join(checkpoints, "a"), "b": storage.join(checkpoints, "b")}
    figures = evaluate_checkpoints(folder, wanted, probe, eval_options)
    a, b = figures["a"], figures["b"]
    assert a["text_perplexity"] == b["text_perplexity"]  # text path identical: bit for bit
    assert a["heldout_loss"] != b["heldout_loss"]  # the image matters to the answer
    for key in ("caption_accuracy", "grounding_accuracy"):
        assert 0.0 <= a[key] <= 1.0
    assert len(a["samples"]) == 4 and a["samples"][0]["truth"].endswith(".")
    made = tmp_path / "reports" / "eval" / "a@probe.json"
    written = made.stat().st_mtime_ns
    assert evaluate_checkpoints(folder, wanted, probe, eval_options) == figures
    assert made.stat().st_mtime_ns == written  # read back
    # By content: the same weights and probe copied elsewhere (a copied run root) are read back.
    shutil.copytree(tmp_path / "checkpoints", tmp_path / "copy" / "checkpoints")
    shutil.copytree(tmp_path / "probe", tmp_path / "copy" / "probe")  # keeps mtimes, as cp -a
    moved = {name: str(tmp_path / "copy" / "checkpoints" / name) for name in wanted}
    again = evaluate_checkpoints(folder, moved, str(tmp_path / "copy" / "probe"), eval_options)
    assert again == {name: figures[name] | {"weights": moved[name]} for name in wanted}
    assert made.stat().st_mtime_ns == written
    png = milestones_png([{"stage": "init", "samples_seen": 0, **a},
                          {"stage": "S1.1", "samples_seen": 8, **b}], chance=0.3)  # fmt: skip
    assert png[:4] == b"\x89PNG"
    assert evaluation_table(figures).count("\n") == 3
