"""vLLM backend for GPU machines where vLLM is installed (not needed for the tests).

vLLM does its own InternVL preprocessing, so this teacher takes images and prompt texts.
"""

from __future__ import annotations

from recaption.options import TeacherOptions


class VllmTeacher:
    """An InternVL checkpoint served by `vllm.LLM` inside the actor."""

    def __init__(self, path: str, options: TeacherOptions):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as error:
            raise ImportError(
                "backend 'vllm' needs vLLM: pip install vllm (GPU machines)"
            ) from error
        generation = options.generation
        self.options = options
        self.llm = LLM(model=path, dtype="auto" if options.dtype == "auto" else options.dtype,
                       trust_remote_code=True, limit_mm_per_prompt={"image": 1},
                       mm_processor_kwargs={"max_dynamic_patch": options.max_tiles})  # fmt: skip
        self.sampling = SamplingParams(
            max_tokens=generation.max_new_tokens,
            temperature=generation.temperature if generation.do_sample else 0.0,
            repetition_penalty=generation.repetition_penalty,
        )

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
