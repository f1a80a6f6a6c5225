"""The demo's student LLM, pretrained on text first (EViP starts from a pretrained LLM).

Its tokenizer is trained on the synthetic web's language, and a plain causal-LM loop teaches it
that language: descriptions of drawn scenes (never the web's or the probe's own scenes) and
alt-text-like lines (web text), as plain sentences, and the descriptions as answers of captioning
and question turns in the chat format, as a chat LLM knows its format before it sees an
image, and the descriptions of scenes written out as word grids where an image sits, as a real
LLM knows how to describe what its context shows. Weights are saved with `save_pretrained`:
from here on the student is an ordinary Hugging Face checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from model.chat import IMG_END, IMG_START
from model.options import TinyLLMOptions
from model.tiny import build_tiny_llm, build_tiny_tokenizer
from pipelines.stages.render import TASK_PROMPTS
from pipelines.stages.spec import CONCEPT_PROMPT
from pipelines.synthetic.fit import fit
from pipelines.synthetic.scenes import make_scene

STUDENT_TEXT_FROM = 3_000_000
"""First scene index of the student's text (past the web's and the probe's)."""


def _chat(question: str, answer: str) -> str:
    return (f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}"
            "<|im_end|>\n")  # fmt: skip


def written_scene(scene, side: int = 8) -> str:
    """The scene written as a side x side grid of words, one per cell (row-major), where an
    image's visual tokens sit (8 x 8: a 224-px tile's tokens): the colour of what covers the
    cell, an object's cells alternating its colour and its shape word.

    Why: EViP's first stages freeze the text path, so the LLM must already read its context; a
    real LLM does, but a tiny one pretrained on context-free descriptions does not, and no visual
    token can then steer what it says (measured: image_gain 0.03 after 400 S1.2 steps; 0.31
    after 120 with this)."""
    words = []
    for row in range(side):
        for col in range(side):
            x, y = (col + 0.5) * scene.width / side, (row + 0.5) * scene.height / side
            word = scene.background
            for obj in scene.objects:
                x0, y0, x1, y1 = obj.box
                if x0 <= x < x1 and y0 <= y < y1:
                    word = obj.colour if (row + col) % 2 == 0 else obj.shape
            words.append(word)
    return f"{IMG_START}{' '.join(words)}{IMG_END}"


def student_texts(seed: int, count: int) -> list[str]:
    """`count` scenes' worth of text: each description plain, as a chat answer, and as the
    answer to the scene written out where an image would sit (`written_scene`)."""
    rng, texts = random.Random(seed), []
    for index in range(STUDENT_TEXT_FROM, STUDENT_TEXT_FROM + count):
        scene = make_scene(seed, index)
        texts += [scene.description, scene.alt_text]  # web text: clean and alt-text-like
        question = rng.choice([CONCEPT_PROMPT, TASK_PROMPTS["caption"]])
        texts.append(_chat(question, scene.description))
        # Three times: reading its context is the skill the frozen text path needs most.
        texts += [_chat(f"{written_scene(scene)}\n{question}", scene.description)] * 3
        first = scene.objects[0]
        texts.append(_chat(f"What colour is the {first.shape}?", f"It is {first.colour}."))
    return texts


def demo_tokenizer(seed: int, vocab_size: int = 512):
    """The demo's byte-level BPE, trained on the web's language (student and teacher share it,
    as Mono-InternVL and its InternVL teacher share InternLM2's)."""
    return build_tiny_tokenizer(vocab_size, corpus=" ".join(student_texts(seed, 1000)))


def pretrain_student(path: str | Path, options: TinyLLMOptions, seed: int = 0) -> Path:
    """Builds the tokenizer and the tiny LLM, pretrains it for `options.pretrain_steps` steps on
    `student_texts`, saves both to `path`."""
    path = Path(path)
    texts = student_texts(seed, options.pretrain_texts)
    tokenizer = demo_tokenizer(seed, options.vocab_size)
    model = build_tiny_llm(options, tokenizer)
    # Packed into long sequences, as LLMs are pretrained: positions far past one sentence are
    # in distribution, where the answer sits after an image's hundreds of visual tokens.
    stream = []
    for text in random.Random(seed).sample(texts, len(texts)):
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    length = min(options.pretrain_length, len(stream) - 1)
    generator = random.Random(seed)

    def batch() -> dict:
        starts = [generator.randrange(len(stream) - length) for _ in range(8)]
        ids = torch.tensor([stream[i : i + length] for i in starts])
        return {"input_ids": ids, "labels": ids}

    fit(model, batch, options.pretrain_steps, options.pretrain_lr, "pretrain student LLM")
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
