"""The teacher: images + prompts -> captions, with the generation settings recorded.

`TeacherInputs` (CPU: decode, InternVL tiling, tokenisation) is separate from `TransformersTeacher`
(the model, batched `generate`), so a Ray job can size preprocessing and generation apart. Both load
from `from_pretrained(path)` exactly as a released InternVL checkpoint does.
"""

from __future__ import annotations

import io
import json
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
from pipelines import storage
from recaption.options import TeacherOptions

ORIGINAL_FORMAT = "internvl_chat"
"""model_type of an original-format (remote-code) InternVL checkpoint; `-hf` ones are internvl."""
CONVERTER = "src/transformers/models/internvl/convert_internvl_weights_to_hf.py"
"""transformers' converter of original InternVL checkpoints (in its source tree, not the wheel)."""


def checkpoint_model_type(path: str) -> str | None:
    """The `model_type` of the checkpoint folder (local or URL); None without a config.json."""
    url = storage.join(path, "config.json")
    if not storage.exists(url):
        return None
    return json.loads(storage.read_bytes(url)).get("model_type")


def check_checkpoint(path: str, options: TeacherOptions, backend: str) -> str | None:
    """The checkpoint's model_type, after failing up front where `backend` cannot run it.

    Raises:
        ValueError: an original-format InternVL on transformers (its processor and `.chat()`
            model are remote code that `AutoModelForImageTextToText` cannot drive), or on vLLM
            without `teacher.trust_remote_code` (vLLM reads its config through that code).
    """
    model_type = checkpoint_model_type(path)
    if model_type != ORIGINAL_FORMAT:
        return model_type
    if backend == "transformers":
        raise ValueError(
            f"teacher.path {path} is an original-format InternVL checkpoint (model_type "
            f"{ORIGINAL_FORMAT!r}, remote code); the transformers backend needs a `-hf` one "
            f"(model_type 'internvl'): download the published -hf release (e.g. "
            f"OpenGVLab/InternVL3-8B-hf), or convert it with transformers' converter, "
            f"`python {CONVERTER} --input_dir <hub id> --output_dir <folder>` from a transformers "
            f"source checkout (it knows the InternVL2.5/3 ids), or caption with the original on "
            f"vLLM: teacher.backend=vllm teacher.trust_remote_code=true")
    if not options.trust_remote_code:
        raise ValueError(f"teacher.path {path} is an original-format InternVL checkpoint: vLLM "
                         f"loads it through its own code; set teacher.trust_remote_code: true")
    return model_type


class _ImageOnlyInternVLProcessor(InternVLProcessor):
    """InternVLProcessor without a video processor (that one needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def load_processor(path: str, trust_remote_code: bool = False):
    """The checkpoint's processor; assembled from its tokenizer and image processor when
    `AutoProcessor` cannot build it (no torchvision, so no video processor)."""
    remote = {"trust_remote_code": trust_remote_code}
    try:
        processor = AutoProcessor.from_pretrained(path, **remote)
        if hasattr(processor, "image_processor"):
            return processor
    except (ImportError, ValueError):
        pass
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, **remote)
    tokenizer = AutoTokenizer.from_pretrained(path, **remote)
    return _ImageOnlyInternVLProcessor(
        image_processor=AutoImageProcessor.from_pretrained(path, **remote),
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
    """CPU side of the teacher: prompt text, tokens and InternVL tiles for one image at a time.

    For an original-format checkpoint (vLLM only, which tiles by itself) it holds just the
    tokenizer and writes prompts with InternVL's `<image>` placeholder.
    """

    def __init__(self, path: str, options: TeacherOptions, backend: str = "transformers"):
        self.options, self.processor, self.tokenizer = options, None, None
        if check_checkpoint(path, options, backend) == ORIGINAL_FORMAT:
            self.tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=options.trust_remote_code)
        else:
            self.processor = load_processor(path, options.trust_remote_code)

    def prompt_text(self, prompt: str) -> str:
        if self.processor is None:  # the original format's chat, as vLLM's InternVL expects it
            turn = [{"role": "user", "content": f"<image>\n{prompt}"}]
            if getattr(self.tokenizer, "chat_template", None):
                return self.tokenizer.apply_chat_template(turn, tokenize=False,
                                                          add_generation_prompt=True)
            return f"<|im_start|>user\n<image>\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
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
        check_checkpoint(path, options, "transformers")
        remote = {"trust_remote_code": options.trust_remote_code}
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=self.dtype, **remote)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, **remote)
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
