"""The teacher: images + prompts -> captions, with the generation settings recorded.

`TeacherInputs` (CPU: decode, InternVL tiling, tokenisation) is separate from `TransformersTeacher`
(the model, batched `generate`), so a Ray job can size preprocessing and generation apart. Both load
from `from_pretrained(path)` exactly as a released InternVL checkpoint does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    InternVLProcessor,
)

from model.chat import build_chat_prompt
from recaption.options import TeacherOptions


class _ImageOnlyInternVLProcessor(InternVLProcessor):
    """InternVLProcessor without a video processor (that one needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def load_processor(path: str):
    """The checkpoint's processor; assembled from its tokenizer and image processor when
    `AutoProcessor` cannot build it (no torchvision, so no video processor)."""
    try:
        processor = AutoProcessor.from_pretrained(path)
        if hasattr(processor, "image_processor"):
            return processor
    except (ImportError, ValueError):
        pass
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return _ImageOnlyInternVLProcessor(
        image_processor=AutoImageProcessor.from_pretrained(path),
        tokenizer=tokenizer,
        video_processor=None,
        image_seq_length=config.image_seq_length,
        chat_template=tokenizer.chat_template,
    )


def decode_image(data: bytes) -> Image.Image:
    """JPEG/PNG bytes -> RGB image; raises on anything that is not a readable image."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


@dataclass
class PreparedSample:
    """One sample ready for the teacher: its prompt tokens and its tiles."""

    input_ids: np.ndarray
    pixel_values: np.ndarray


class TeacherInputs:
    """CPU side of the teacher: prompt text, tokens and InternVL tiles for one image at a time."""

    def __init__(self, path: str, options: TeacherOptions):
        self.processor = load_processor(path)
        self.options = options

    def prompt_text(self, prompt: str) -> str:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        # No template shipped: InternVL's own InternLM2 chat format (the processor expands the
        # image token into the image's span).
        content = f"{self.processor.image_token}\n{prompt}"
        return build_chat_prompt([{"role": "user", "content": content}])

    def prepare(self, image: Image.Image, prompt: str) -> PreparedSample:
        features = self.processor(
            text=[self.prompt_text(prompt)],
            images=[image],
            return_tensors="np",
            crop_to_patches=self.options.max_tiles > 1,
            max_patches=self.options.max_tiles,
        )
        return PreparedSample(
            input_ids=features["input_ids"][0].astype(np.int64),
            pixel_values=features["pixel_values"].astype(np.float16),
        )


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


class TransformersTeacher:
    """An InternVL checkpoint via `AutoModelForImageTextToText`, one batched `generate` per call."""

    def __init__(self, path: str, options: TeacherOptions, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _pick_dtype(options.dtype, self.device)
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.options = options
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id

    @property
    def settings(self) -> dict:
        """What produced the captions, stored beside them."""
        return {"teacher": self.options.name, "backend": "transformers", "dtype": str(self.dtype),
                "max_tiles": self.options.max_tiles,
                **self.options.generation.model_dump()}  # fmt: skip

    @torch.no_grad()
    def generate(self, samples: list[PreparedSample]) -> list[str]:
        """Left-pads the prompts, stacks the tiles, runs one `generate` for the whole batch."""
        if not samples:
            return []
        longest = max(len(s.input_ids) for s in samples)
        ids = torch.full((len(samples), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for row, sample in enumerate(samples):
            ids[row, longest - len(sample.input_ids) :] = torch.from_numpy(sample.input_ids)
            mask[row, longest - len(sample.input_ids) :] = 1
        pixels = torch.from_numpy(np.concatenate([s.pixel_values for s in samples]))
        generation = self.options.generation
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            pixel_values=pixels.to(self.device, self.dtype),
            max_new_tokens=generation.max_new_tokens,
            do_sample=generation.do_sample,
            temperature=generation.temperature if generation.do_sample else None,
            repetition_penalty=generation.repetition_penalty,
            no_repeat_ngram_size=generation.no_repeat_ngram_size,
            pad_token_id=self.pad_id,
        )
        return self.tokenizer.batch_decode(out[:, longest:], skip_special_tokens=True)


def resolve_backend(options: TeacherOptions, gpus_per_actor: float) -> str:
    """`auto` -> vllm where vLLM is importable and the teacher actors get GPUs."""
    if options.backend != "auto":
        return options.backend
    import importlib.util

    return "vllm" if gpus_per_actor > 0 and importlib.util.find_spec("vllm") else "transformers"


def build_teacher(path: str, options: TeacherOptions, backend: str, device: str | None = None):
    """The teacher of a resolved backend (see `resolve_backend`)."""
    if backend == "vllm":
        from recaption.vllm_teacher import VllmTeacher

        return VllmTeacher(path, options)
    return TransformersTeacher(path, options, device)
