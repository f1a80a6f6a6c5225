"""The vLLM teacher: the config reaches the engine (CPU, no vLLM needed), and on a GPU with vLLM
installed it captions with a tiny InternVL."""

from __future__ import annotations

import json
import shutil

import pytest

from recaption.options import TeacherOptions, VllmEngineOptions
from recaption.vllm_teacher import VllmTeacher, engine_kwargs
from tests.recaption.conftest import GENERATION

ENGINE = VllmEngineOptions(tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=4096,
                           max_num_seqs=64, images_per_prompt=2)  # fmt: skip


def original_format(teacher_dir, folder):
    """The tiny teacher's folder with an original-format (remote code) config.json."""
    shutil.copytree(teacher_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="internvl_chat", architectures=["InternVLChatModel"],
                  auto_map={"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


class _Recorder:
    """Stands in for `vllm.LLM` / `SamplingParams`: keeps what it was built with."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_engine_settings_reach_the_engine(teacher_dir):
    options = TeacherOptions(path=str(teacher_dir), dtype="bfloat16", max_tiles=4,
                             trust_remote_code=True, vllm=ENGINE, generation=GENERATION)
    teacher = VllmTeacher(str(teacher_dir), options, engine=_Recorder, sampling=_Recorder)
    assert teacher.llm.kwargs == {
        "model": str(teacher_dir), "dtype": "bfloat16", "trust_remote_code": True,
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 4096,
        "max_num_seqs": 64, "limit_mm_per_prompt": {"image": 2},
        "mm_processor_kwargs": {"max_patches": 4, "crop_to_patches": True},
    }  # fmt: skip
    assert teacher.sampling.kwargs == {"max_tokens": 8, "temperature": 0.0,
                                       "repetition_penalty": 1.5}  # fmt: skip


def test_defaults_leave_vllm_its_own():
    kwargs = engine_kwargs("/m", TeacherOptions(), "internvl")
    assert "max_model_len" not in kwargs and "max_num_seqs" not in kwargs
    assert kwargs["tensor_parallel_size"] == 1 and kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert kwargs["dtype"] == "auto" and kwargs["trust_remote_code"] is False
    original = engine_kwargs("/m", TeacherOptions(max_tiles=6), "internvl_chat")
    assert original["mm_processor_kwargs"] == {"max_dynamic_patch": 6}


def test_engine_settings_are_validated():
    for bad in ({"tensor_parallel_size": 0}, {"gpu_memory_utilization": 1.5},
                {"max_model_len": 0}, {"images_per_prompt": 0}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            TeacherOptions(vllm=bad)


def test_the_original_format_on_vllm_needs_remote_code(teacher_dir, tmp_path):
    folder = original_format(teacher_dir, tmp_path / "InternVL2-8B")
    with pytest.raises(ValueError, match="teacher.trust_remote_code: true"):
        VllmTeacher(str(folder), TeacherOptions(), engine=_Recorder, sampling=_Recorder)
    teacher = VllmTeacher(str(folder), TeacherOptions(trust_remote_code=True), engine=_Recorder,
                          sampling=_Recorder)  # fmt: skip
    assert teacher.llm.kwargs["trust_remote_code"] is True


@pytest.mark.gpu
def test_vllm_teacher_captions_on_a_gpu(teacher_dir):
    pytest.importorskip("vllm")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from pipelines.synthetic.scenes import make_scene, render
    from recaption.teacher import TeacherInputs

    options = TeacherOptions(path=str(teacher_dir), max_tiles=2, generation=GENERATION,
                             vllm=VllmEngineOptions(gpu_memory_utilization=0.3,
                                                    max_model_len=512, max_num_seqs=8))
    teacher = VllmTeacher(str(teacher_dir), options)
    prompt = TeacherInputs(str(teacher_dir), options, "vllm").prompt_text("Describe.")
    captions = teacher.generate_from_images([render(make_scene(0, i)) for i in range(3)],
                                            [prompt] * 3)  # fmt: skip
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
