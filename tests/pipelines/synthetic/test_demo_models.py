"""The demo's student (pretrained on the web's language) and teacher (trained on its images)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.options import TinyLLMOptions
from pipelines.synthetic.scenes import make_scene
from pipelines.synthetic.student import pretrain_student
from recaption.demo_teacher import train_demo_teacher
from recaption.options import TeacherOptions
from recaption.teacher import TeacherInputs, TransformersTeacher


def _loss(folder, text: str) -> float:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


def test_the_student_learns_the_webs_language(tmp_path):
    options = TinyLLMOptions(pretrain_steps=40, pretrain_texts=200, pretrain_length=128)
    untrained = pretrain_student(tmp_path / "untrained", options.model_copy(
        update={"pretrain_steps": 0}))  # fmt: skip
    trained = pretrain_student(tmp_path / "trained", options)
    unseen = make_scene(0, 123).description  # a web scene: never in the student's text
    assert _loss(trained, unseen) < 0.5 * _loss(untrained, unseen)


def test_the_teacher_is_a_transformers_internvl_the_recaption_job_loads(tmp_path):
    options = TeacherOptions(max_tiles=1, generation={"max_new_tokens": 5},
                             tiny={"train_steps": 3, "tile_size": 64})  # fmt: skip
    folder = train_demo_teacher(tmp_path / "teacher", options, web_seed=0, num_images=4)
    inputs, teacher = TeacherInputs(str(folder), options), TransformersTeacher(str(folder), options)
    from pipelines.synthetic.scenes import render

    captions = teacher.generate([inputs.prepare(render(make_scene(0, 1)), "Describe it.")])
    assert len(captions) == 1 and isinstance(captions[0], str)
