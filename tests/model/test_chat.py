"""Prompts in the InternLM2 chat format, with one image span per image."""

from __future__ import annotations

import pytest

from model.chat import build_chat_prompt, image_span


def test_prompt_format_and_image_spans(tokenizer):
    prompt = build_chat_prompt(
        [{"role": "user", "content": "<image>\nprovide a one-sentence caption for the image"}],
        image_token_counts=[3],
        system="be brief",
    )
    assert prompt == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>\n"
        "provide a one-sentence caption for the image<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 3


def test_images_without_placeholders_lead_the_first_user_message():
    prompt = build_chat_prompt(
        [
            {"role": "user", "content": "what is it?"},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "sure?"},
        ],
        image_token_counts=[1, 2],
        add_generation_prompt=False,
    )
    assert prompt.startswith(f"<|im_start|>user\n{image_span(1)}\n{image_span(2)}\nwhat is it?")
    assert prompt.endswith("<|im_start|>user\nsure?<|im_end|>\n")


def test_more_placeholders_than_images_is_an_error():
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        build_chat_prompt([{"role": "user", "content": "<image><image>"}], [4])
