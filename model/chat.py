"""Special tokens and the InternLM2 chat format with image spans.

A prompt holds `<img>` + `<IMG_CONTEXT>` x N + `</img>` per image, where N is the image's visual
token count (tiles x tokens per tile); the model swaps the placeholders for visual tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
GROUNDING_TOKENS = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>")
IMAGE_TOKENS = (IMG_START, IMG_END, IMG_CONTEXT)
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
SPECIAL_TOKENS = IMAGE_TOKENS + GROUNDING_TOKENS
IMAGE_PLACEHOLDER = "<image>"
"""Where an image goes in a user message; without one, images lead the first user message."""


def add_special_tokens(tokenizer) -> dict[str, int]:
    """Adds the image, grounding and chat tokens the tokenizer lacks; returns every token's id."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in SPECIAL_TOKENS + CHAT_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + CHAT_TOKENS}


def image_span(num_tokens: int) -> str:
    """The text that stands for one image of `num_tokens` visual tokens."""
    if num_tokens <= 0:
        raise ValueError(f"an image needs at least one visual token, got {num_tokens}")
    return IMG_START + IMG_CONTEXT * num_tokens + IMG_END


def build_chat_prompt(
    messages: Sequence[dict],
    image_token_counts: Sequence[int] = (),
    system: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Renders `[{"role": "user"|"assistant", "content": str}, ...]` in the InternLM2 chat format.

    Each `<image>` in user messages becomes the next image's span, in order; images without a
    placeholder are put, one per line, before the first user message's text.

    Raises:
        ValueError: more placeholders than images, or a role other than user/assistant/system.
    """
    spans = [image_span(n) for n in image_token_counts]
    placeholders = sum(
        m["content"].count(IMAGE_PLACEHOLDER) for m in messages if m["role"] == "user"
    )
    if placeholders > len(spans):
        raise ValueError(f"{placeholders} {IMAGE_PLACEHOLDER} placeholders but {len(spans)} images")
    unplaced = spans[placeholders:]
    spans = iter(spans[:placeholders])
    parts = [] if system is None else [f"<|im_start|>system\n{system}<|im_end|>\n"]
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"message {index}: unknown role {role!r}")
        if role == "user":
            while IMAGE_PLACEHOLDER in content:
                content = content.replace(IMAGE_PLACEHOLDER, next(spans), 1)
            if unplaced:
                content = "".join(span + "\n" for span in unplaced) + content
                unplaced = []
        parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)
