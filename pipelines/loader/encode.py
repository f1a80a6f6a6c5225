"""One conversation -> token ids and labels, in the InternLM2 chat format, loss on answers only.

Each turn is `<|im_start|>{role}\\n{content}<|im_end|>\\n`. The loss covers every assistant turn's
content and the `<|im_end|>` that closes it (so the model learns to stop); never the system or
user text, the image tokens, or the role headers. `<image>` in a user turn becomes the image's
span (`<img>` + `<IMG_CONTEXT>` x visual tokens + `</img>`), as `model.chat` renders prompts.
Pieces are tokenized separately so the mask follows piece boundaries exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from model.chat import IMAGE_PLACEHOLDER, image_span

IGNORE = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "system": "system"}  # fmt: skip


class ConversationError(ValueError):
    """A conversation that cannot be trained on (bad role, placeholders without images)."""


def _pieces(tokenizer, turns: Sequence[dict], image_tokens: Sequence[int]):
    """(token ids, learned) per piece of the rendered conversation, in order."""
    spans = [image_span(n) for n in image_tokens]
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(spans):
        raise ConversationError(f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for "
                                f"{len(spans)} images")  # fmt: skip
    spans = iter(spans)
    for index, turn in enumerate(turns):
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise ConversationError(f"turn {index}: unknown role {turn.get('from')!r}")
        content = turn["value"]
        while IMAGE_PLACEHOLDER in content:
            content = content.replace(IMAGE_PLACEHOLDER, next(spans), 1)
        answer = role == "assistant"
        for text, learn in ((f"<|im_start|>{role}\n", False), (content, answer),
                            ("<|im_end|>", answer), ("\n", False)):  # fmt: skip
            if text:
                yield tokenizer(text, add_special_tokens=False)["input_ids"], learn


def _turns(conversations: Sequence[dict], system: str | None) -> list[dict]:
    return ([{"from": "system", "value": system}] if system is not None else []) + list(
        conversations)


def encode_conversation(tokenizer, conversations: Sequence[dict], image_tokens: Sequence[int] = (),
                        system: str | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
    """(input_ids, labels) of one LLaVA-style conversation (`from` / `value` turns).

    Args:
        image_tokens: visual tokens of each image, in the order of the `<image>` placeholders.
    """
    ids, labels = [], []
    for piece, learn in _pieces(tokenizer, _turns(conversations, system), image_tokens):
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))
    if not any(label != IGNORE for label in labels):
        raise ConversationError("no assistant turn to learn from")
    return ids, labels


def encode_prompt(tokenizer, conversations: Sequence[dict], image_tokens: Sequence[int] = (),
                  system: str | None = None) -> list[int]:  # fmt: skip
    """Input ids that ask the model for the next assistant turn, tokenized exactly as training
    tokenizes a conversation (piece by piece), so generation sees what training saw."""
    ids = [t for piece, _ in _pieces(tokenizer, _turns(conversations, system), image_tokens)
           for t in piece]  # fmt: skip
    return ids + tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
