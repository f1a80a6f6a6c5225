"""The demo's shipped teacher and student: used for exactly the settings they were made with,
copied as a run would have written them, and still what today's code would train them on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoTokenizer

from flows.config import load_run_config
from flows.model_demo import llm_path
from flows.recaption import teacher_path
from pipelines.synthetic.pretrained import RECORD, SHIPPED, shipped
from pipelines.synthetic.student import demo_tokenizer

DEMO = str(Path(__file__).parents[3] / "configs" / "demo.yaml")
FOLDERS = {"teacher": "tiny-internvl", "llm": "tiny-llama-0-pretrained"}


def _record(name: str) -> dict:
    return json.loads((SHIPPED / name / RECORD).read_text())


def test_the_demo_config_runs_on_the_shipped_models_without_training(tmp_path, capsys):
    config = load_run_config(DEMO, [f"run_root={tmp_path}"])
    teacher, student = Path(teacher_path(config)), llm_path(config)
    assert "shipped checkpoint" in capsys.readouterr().out  # copied, not trained (minutes)
    for folder, parent in ((teacher, "teacher"), (student, "llm")):
        record = json.loads((tmp_path / parent / "_done" / f"{folder.name}.json").read_text())
        shipped_record = _record(FOLDERS[parent])
        # What the run records is what the run that made them recorded, files and settings.
        assert record["settings_hash"] == shipped_record["settings_hash"]
        assert record["covered"] == shipped_record["covered"]
        assert not (folder / RECORD).exists()


@pytest.mark.parametrize("override", ["synthetic_web.seed=1", "model.tiny_llm.pretrain_steps=20",
                                      "model.tiny_llm.seed=3"])  # fmt: skip
def test_other_settings_are_not_given_the_shipped_student(tmp_path, override, monkeypatch):
    config = load_run_config(DEMO, [f"run_root={tmp_path}", override])
    settings = {"tiny_llm": config.model.tiny_llm.model_dump(),
                "trained_on": {"web_seed": config.synthetic_web.seed}}  # fmt: skip
    name = f"tiny-llama-{config.model.tiny_llm.seed}-pretrained"
    assert shipped(name, settings) is None
    same = load_run_config(DEMO, [f"run_root={tmp_path}"])
    default = {"tiny_llm": same.model.tiny_llm.model_dump(), "trained_on": {"web_seed": 0}}
    assert shipped(FOLDERS["llm"], default) == SHIPPED / FOLDERS["llm"]
    monkeypatch.setenv("EVIP_SHIPPED_MODELS", "0")  # a machine's own training asked for
    assert shipped(FOLDERS["llm"], default) is None


def test_the_shipped_models_are_what_todays_code_would_train():
    """A change to what they learn from (the web's language: the tokenizer is trained on it) or to
    their shape shows here: remake them (`python -m pipelines.synthetic.pretrained`)."""
    config = load_run_config(DEMO, [])
    fresh = demo_tokenizer(config.synthetic_web.seed).get_vocab()
    for name in FOLDERS.values():  # the same BPE (the teacher adds its image tokens to it)
        vocab = AutoTokenizer.from_pretrained(SHIPPED / name).get_vocab()
        assert {k: vocab.get(k) for k in fresh} == fresh, name
    student = AutoConfig.from_pretrained(SHIPPED / FOLDERS["llm"])
    assert {k: getattr(student, k) for k in config.model.tiny_llm.shape()} == \
        config.model.tiny_llm.shape()  # fmt: skip
    teacher = _record(FOLDERS["teacher"])["settings"]
    assert teacher["tiny_internvl"]["train_steps"] == config.teacher.tiny.train_steps
    assert teacher["trained_on"] == {"web_seed": 0, "images": config.synthetic_web.num_images}
