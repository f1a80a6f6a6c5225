"""The loss covers exactly the answers: every assistant turn with its closing <|im_end|>."""

from __future__ import annotations

import pytest

from model.chat import build_chat_prompt
from pipelines.loader.encode import IGNORE, ConversationError, encode_conversation


def _learned(tokenizer, ids, labels) -> list[str]:
    """The learned spans, decoded one contiguous run at a time."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label == IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_multi_turn_masks_cover_answers_and_their_end_of_turn(tokenizer):
    talk = [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "a cat"},
            {"from": "human", "value": "colour?"}, {"from": "gpt", "value": "red"}]  # fmt: skip
    ids, labels = encode_conversation(tokenizer, talk, [4], system="be brief")
    assert _learned(tokenizer, ids, labels) == ["a cat<|im_end|>", "red<|im_end|>"]
    # The same text as the chat format the model is prompted with.
    prompt = build_chat_prompt([{"role": "user", "content": "<image>\nwhat is it?"},
                                {"role": "assistant", "content": "a cat"},
                                {"role": "user", "content": "colour?"},
                                {"role": "assistant", "content": "red"}], [4],
                               system="be brief", add_generation_prompt=False)  # fmt: skip
    assert tokenizer.decode(ids) == prompt
    image = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert ids.count(image) == 4 and all(lab == IGNORE for t, lab in zip(ids, labels)
                                         if t == image)  # fmt: skip


def test_bad_conversations_are_refused(tokenizer):
    with pytest.raises(ConversationError, match="placeholders"):
        encode_conversation(tokenizer, [{"from": "human", "value": "<image>\nx"},
                                        {"from": "gpt", "value": "y"}])  # fmt: skip
    with pytest.raises(ConversationError, match="unknown role"):
        encode_conversation(tokenizer, [{"from": "bot", "value": "x"}])
    with pytest.raises(ConversationError, match="no assistant"):
        encode_conversation(tokenizer, [{"from": "human", "value": "x"}])
    ids, labels = encode_conversation(tokenizer, [{"from": "human", "value": "hi"},
                                                  {"from": "gpt", "value": "hello"}])  # fmt: skip
    assert _learned(tokenizer, ids, labels) == ["hello<|im_end|>"]  # a text-only row


def test_a_generation_prompt_is_tokenized_as_training_tokenizes_the_conversation(tokenizer):
    from pipelines.loader.encode import encode_prompt

    question = [{"from": "human", "value": "<image>\nprovide a one-sentence caption"}]
    ids, labels = encode_conversation(tokenizer, [*question, {"from": "gpt", "value": "a cat"}],
                                      [4])  # fmt: skip
    prompt = encode_prompt(tokenizer, question, [4])
    assert ids[: len(prompt)] == prompt and labels[len(prompt) - 1] == IGNORE
    assert labels[len(prompt)] == ids[len(prompt)]  # the answer starts right after the prompt
