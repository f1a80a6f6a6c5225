"""vLLM backend for GPU machines where vLLM is installed (not needed for the tests).

vLLM does its own InternVL preprocessing, so this teacher takes images and prompt texts. It runs
both checkpoint formats: `-hf` (model_type internvl) and the original one (internvl_chat, remote
code: `teacher.trust_remote_code`). `engine_kwargs` is the whole of what the config sets on the
engine, a pure function; `VllmTeacher` is the thin part that imports vLLM.
"""

from __future__ import annotations

from recaption.options import TeacherOptions
from recaption.teacher import ORIGINAL_FORMAT, check_checkpoint


def engine_kwargs(path: str, options: TeacherOptions, model_type: str | None) -> dict:
    """The keyword arguments of `vllm.LLM` for the teacher at `path` of `model_type`."""
    engine = options.vllm
    # The original format's own tiling takes max_dynamic_patch; a -hf checkpoint's processor
    # (GotOcr2) takes max_patches, as the transformers teacher passes it.
    tiles = ({"max_dynamic_patch": options.max_tiles} if model_type == ORIGINAL_FORMAT
             else {"max_patches": options.max_tiles, "crop_to_patches": options.max_tiles > 1})
    kwargs = {"model": path, "dtype": options.dtype, "trust_remote_code": options.trust_remote_code,
              "tensor_parallel_size": engine.tensor_parallel_size,
              "gpu_memory_utilization": engine.gpu_memory_utilization,
              "limit_mm_per_prompt": {"image": engine.images_per_prompt},
              "mm_processor_kwargs": tiles}  # fmt: skip
    for name in ("max_model_len", "max_num_seqs"):  # None: vLLM's own default
        if getattr(engine, name) is not None:
            kwargs[name] = getattr(engine, name)
    return kwargs


def sampling_kwargs(options: TeacherOptions) -> dict:
    """The keyword arguments of `vllm.SamplingParams` for the teacher's generation options."""
    generation = options.generation
    return {"max_tokens": generation.max_new_tokens,
            "temperature": generation.temperature if generation.do_sample else 0.0,
            "repetition_penalty": generation.repetition_penalty}  # fmt: skip


class VllmTeacher:
    """An InternVL checkpoint served by `vllm.LLM` inside the actor.

    Args:
        engine, sampling: the classes to build (vLLM's `LLM` and `SamplingParams` by default).
    """

    def __init__(self, path: str, options: TeacherOptions, engine=None, sampling=None):
        if engine is None or sampling is None:
            try:
                from vllm import LLM, SamplingParams
            except ImportError as error:
                raise ImportError(
                    "backend 'vllm' needs vLLM: pip install vllm (GPU machines)"
                ) from error
            engine, sampling = engine or LLM, sampling or SamplingParams
        self.options = options
        model_type = check_checkpoint(path, options, "vllm")
        self.llm = engine(**engine_kwargs(path, options, model_type))
        self.sampling = sampling(**sampling_kwargs(options))

    @property
    def settings(self) -> dict:
        options = self.options
        return {"teacher": options.name, "backend": "vllm", "max_tiles": options.max_tiles,
                **options.generation.model_dump()}  # fmt: skip

    def generate_from_images(self, images, prompt_texts: list[str]) -> list[str]:
        requests = [{"prompt": text, "multi_modal_data": {"image": image}}
                    for image, text in zip(images, prompt_texts)]  # fmt: skip
        outputs = self.llm.generate(requests, self.sampling, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
