"""Batched image captioning with a Mono-InternVL model: images + one prompt -> texts."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.chat import build_chat_prompt

CAPTION_PROMPT = "provide a one-sentence caption for the image"
"""The S1.1 concept-learning prompt (paper section 3.2)."""


def prepare_inputs(
    tokenizer, processor, images: Sequence, prompt: str, max_visual_tokens: int | None = None
) -> dict[str, torch.Tensor]:
    """Tokenized, left-padded chat prompts (one image each) plus every image's tiles."""
    if not images:
        raise ValueError("no images given")
    features = processor(
        images=list(images), return_tensors="pt", max_visual_tokens=max_visual_tokens
    )
    prompts = [
        build_chat_prompt(
            [{"role": "user", "content": prompt}], [int(n) * processor.tokens_per_tile]
        )
        for n in features["num_patches"]
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pixel_values": features["pixel_values"],
    }


@torch.no_grad()
def caption_images(
    model,
    tokenizer,
    processor,
    images: Sequence,
    prompt: str = CAPTION_PROMPT,
    max_new_tokens: int = 32,
    max_visual_tokens: int | None = None,
) -> list[str]:
    """Greedy captions, one per image."""
    inputs = prepare_inputs(tokenizer, processor, images, prompt, max_visual_tokens)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    generated = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
