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


def encode_conversation(tokenizer, conversations: Sequence[dict], image_tokens: Sequence[int] = (),
                        system: str | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
    """(input_ids, labels) of one LLaVA-style conversation (`from` / `value` turns).

    Args:
        image_tokens: visual tokens of each image, in the order of the `<image>` placeholders.
    """
    turns = [{"from": "system", "value": system}] if system is not None else []
    turns += list(conversations)
    spans, ids, labels = [image_span(n) for n in image_tokens], [], []
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(spans):
        raise ConversationError(f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for "
                                f"{len(spans)} images")  # fmt: skip
    spans = iter(spans)

    def add(text: str, learn: bool) -> None:
        if not text:
            return
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if learn else [IGNORE] * len(piece))

    for index, turn in enumerate(turns):
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise ConversationError(f"turn {index}: unknown role {turn.get('from')!r}")
        content = turn["value"]
        while IMAGE_PLACEHOLDER in content:
            content = content.replace(IMAGE_PLACEHOLDER, next(spans), 1)
        answer = role == "assistant"
        add(f"<|im_start|>{role}\n", False)
        add(content, answer)
        add("<|im_end|>", answer)
        add("\n", False)
    if not any(label != IGNORE for label in labels):
        raise ConversationError("no assistant turn to learn from")
    return ids, labels
