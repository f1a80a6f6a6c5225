"""The teacher loads like a release, tiles like InternVL, and captions a batch in one call."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModelForImageTextToText
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

from pipelines.synthetic.scenes import make_scene, render
from recaption.teacher import TeacherInputs, TransformersTeacher, decode_image


def test_tiny_teacher_loads_through_from_pretrained(teacher_dir):
    model = AutoModelForImageTextToText.from_pretrained(teacher_dir)
    assert type(model).__name__ == "InternVLForConditionalGeneration"


def test_inputs_hold_prompt_tokens_and_tiles(teacher_dir, teacher_options):
    inputs = TeacherInputs(str(teacher_dir), teacher_options)
    seen = set()
    for index in range(8):
        image = render(make_scene(0, index))
        sample = inputs.prepare(image, "Describe.")
        assert sample.pixel_values.dtype == np.float16
        assert sample.pixel_values.shape[1:] == (3, 64, 64)
        columns, rows = get_optimal_tiled_canvas((image.height, image.width), (64, 64), 1, 2)
        grid = columns * rows
        assert sample.pixel_values.shape[0] == (grid + 1 if grid > 1 else 1)  # + thumbnail
        seen.add(grid)
        context = inputs.processor.image_token_id
        assert (sample.input_ids == context).sum() == 4 * sample.pixel_values.shape[0]
        assert "Describe." in inputs.processor.tokenizer.decode(sample.input_ids)
    assert seen == {1, 2}


def test_batched_generation_returns_one_caption_per_image(teacher_dir, teacher_options):
    inputs = TeacherInputs(str(teacher_dir), teacher_options)
    teacher = TransformersTeacher(str(teacher_dir), teacher_options)
    samples = [inputs.prepare(render(make_scene(0, i)), "Describe.") for i in range(5)]
    captions = teacher.generate(samples)
    assert len(captions) == 5 and all(isinstance(c, str) for c in captions)
    assert captions == [teacher.generate([s])[0] for s in samples]  # left padding is exact
    assert teacher.settings["max_new_tokens"] == 8 and teacher.settings["backend"] == "transformers"


def test_non_images_fail_to_decode():
    with pytest.raises(OSError):
        decode_image(b"<html>nope</html>")


def test_backend_resolution():
    from recaption.options import TeacherOptions
    from recaption.teacher import resolve_backend

    assert resolve_backend(TeacherOptions(), gpus_per_actor=0) == "transformers"
    assert resolve_backend(TeacherOptions(backend="vllm"), gpus_per_actor=0) == "vllm"
    # vLLM is not installed here: auto keeps transformers even with GPUs asked for.
    assert resolve_backend(TeacherOptions(), gpus_per_actor=1) == "transformers"


def test_prompt_without_a_shipped_template_is_internlm2_format(teacher_dir, teacher_options):
    inputs = TeacherInputs(str(teacher_dir), teacher_options)
    templated = inputs.prompt_text("Describe.")
    inputs.processor.chat_template = None
    assert inputs.prompt_text("Describe.") == templated
    assert templated.startswith("<|im_start|>user\n<IMG_CONTEXT>\nDescribe.<|im_end|>")


def test_a_transformers_format_internvl_loads_on_transformers(teacher_dir, teacher_options):
    """The `-hf` format (model_type internvl), as the demo teacher is saved."""
    from recaption.teacher import check_checkpoint

    assert check_checkpoint(str(teacher_dir), teacher_options, "transformers") == "internvl"
    teacher = TransformersTeacher(str(teacher_dir), teacher_options)
    assert type(teacher.model).__name__ == "InternVLForConditionalGeneration"


def test_an_original_format_internvl_is_refused_up_front_on_transformers(
    teacher_dir, teacher_options, tmp_path
):
    from tests.recaption.test_vllm_teacher import original_format

    folder = str(original_format(teacher_dir, tmp_path / "InternVL2-8B"))
    for load in (TeacherInputs, TransformersTeacher):
        with pytest.raises(ValueError, match="convert_internvl_weights_to_hf") as error:
            load(folder, teacher_options)
        assert "teacher.backend=vllm" in str(error.value) and "-hf" in str(error.value)
    # On vLLM (which tiles by itself) only its prompt is made here, in InternVL's own format.
    remote = teacher_options.model_copy(update={"trust_remote_code": True})
    prompt = TeacherInputs(folder, remote, "vllm").prompt_text("Describe.")
    assert "<image>\nDescribe." in prompt and prompt.endswith("assistant\n")


def test_trust_remote_code_reaches_every_load(teacher_dir, teacher_options, monkeypatch):
    import sys

    import transformers

    from recaption import teacher as module

    seen = []

    def spy(cls):
        original = cls.from_pretrained

        def from_pretrained(*args, **kwargs):
            if sys._getframe(1).f_globals["__name__"] == module.__name__:  # not transformers'
                seen.append((cls.__name__, kwargs.get("trust_remote_code")))
            return original(*args, **kwargs)

        monkeypatch.setattr(getattr(module, cls.__name__), "from_pretrained", from_pretrained)

    for cls in (transformers.AutoProcessor, transformers.AutoTokenizer,
                transformers.AutoModelForImageTextToText):  # fmt: skip
        spy(cls)
    remote = teacher_options.model_copy(update={"trust_remote_code": True})
    TeacherInputs(str(teacher_dir), remote)
    TransformersTeacher(str(teacher_dir), remote)
    assert {name for name, _ in seen} >= {"AutoProcessor", "AutoTokenizer",
                                          "AutoModelForImageTextToText"}  # fmt: skip
    assert all(trust is True for _, trust in seen), seen
