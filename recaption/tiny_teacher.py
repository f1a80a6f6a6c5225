"""A tiny random-weight InternVL teacher built locally, saved like a released checkpoint.

Its captions are gibberish; everything around it (processor, batching, generation, cleaning,
the Ray job) is the real path a real InternVL checkpoint takes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from model.tiny import build_tiny_tokenizer

TILE = 64
"""Default tile side in pixels."""
PATCH = 16
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_NAMED_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                 "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip


def save_tiny_teacher(
    path: str | Path, seed: int = 0, max_tiles: int = 6, hidden_size: int = 32, layers: int = 2,
    tokenizer=None, tile: int = TILE,
) -> Path:
    """Writes model, tokenizer (with chat template) and image processor to `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (tokenizer if tokenizer is not None else build_tiny_tokenizer()).save_pretrained(path)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path, extra_special_tokens=_NAMED_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[tile, tile], patch_size=[PATCH, PATCH],
        ),
        text_config=Qwen2Config(
            hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.context_image_token_id,
        downsample_ratio=0.5,
        image_seq_length=(tile // PATCH) ** 2 // 4,
    )  # fmt: skip
    InternVLForConditionalGeneration(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    GotOcr2ImageProcessorPil(
        size={"height": tile, "width": tile}, crop_to_patches=max_tiles > 1,
        max_patches=max_tiles, image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD,
    ).save_pretrained(path)  # fmt: skip
    return path
