"""Tiny random-weight LLMs and tokenizers, built locally, for tests and the offline demo.

They are saved with `save_pretrained` and loaded back through the same `from_pretrained(path)`
code a real checkpoint takes; only their weights are random.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from model.chat import CHAT_TOKENS, SPECIAL_TOKENS
from model.options import TinyLLMOptions

BASE_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
_CORPUS = (
    "a red circle on a blue background. a green square next to a yellow triangle. "
    "provide a one-sentence caption for the image. the photo shows a cat sitting on a mat. "
    "detect the objects and give their boxes. read the text in the image. what colour is it? "
    "photographer credit 2019 stock image royalty free. The image shows two shapes and a word. "
)


def build_tiny_tokenizer(
    vocab_size: int = 512, corpus: str = _CORPUS, with_image_tokens: bool = True
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory on a small caption-like corpus.

    With `with_image_tokens=False` it lacks evip's image and grounding tokens, like a text LLM's.
    """
    extra = [*CHAT_TOKENS, *SPECIAL_TOKENS] if with_image_tokens else list(CHAT_TOKENS)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*BASE_TOKENS, *extra],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([corpus] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=extra,
    )


def build_tiny_llm(options: TinyLLMOptions, tokenizer) -> PreTrainedModel:
    """A random Llama or Qwen2 causal LM of the given shape over `tokenizer`'s vocabulary."""
    shape = dict(
        vocab_size=len(tokenizer),
        **options.shape(),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(options.seed)
    if options.family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True)).eval()
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


def save_tiny_llm(
    path: str | Path, options: TinyLLMOptions = TinyLLMOptions(), tokenizer=None
) -> Path:
    """Writes a tiny LLM and its tokenizer to `path`, as a Hugging Face checkpoint directory."""
    path = Path(path)
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    build_tiny_llm(options, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
