"""The demo's teacher: a tiny InternVL trained on the synthetic web's images and their clean
descriptions, so that, like InternVL-8B in the paper, it knows more than the alt-text.

It is the real transformers InternVL (`InternVLForConditionalGeneration`), its inputs made by the
recaption job's own `TeacherInputs` (same processor, chat template and prompts), so the captions
the real job asks it for are in the format it was trained on. Held-in on purpose: it learns the
very images it will recaption.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from pipelines.synthetic.fit import fit
from recaption.options import TeacherOptions
from recaption.prompts import prompt_for
from recaption.tiny_teacher import save_tiny_teacher


def train_demo_teacher(path: str | Path, options: TeacherOptions, web_seed: int,
                       num_images: int, tokenizer=None) -> Path:  # fmt: skip
    """Writes the tiny teacher to `path`, trained for `options.tiny.train_steps` steps."""
    from transformers import InternVLForConditionalGeneration

    from pipelines.synthetic.scenes import make_scene, render
    from recaption.teacher import TeacherInputs

    tiny = options.tiny
    save_tiny_teacher(path, max_tiles=options.max_tiles, hidden_size=tiny.hidden_size,
                      layers=tiny.layers, tokenizer=tokenizer, tile=tiny.tile_size)  # fmt: skip
    model = InternVLForConditionalGeneration.from_pretrained(path)
    inputs = TeacherInputs(str(path), options)
    text = inputs.processor.tokenizer
    examples = []
    for index in range(num_images):
        scene = make_scene(web_seed, index)
        prompt = prompt_for(f"{index:016x}", options.prompts)
        prepared = inputs.prepare(render(scene), prompt)
        answer = text(scene.description + "<|im_end|>", add_special_tokens=False)["input_ids"]
        examples.append((prepared.input_ids.tolist(), answer, torch.from_numpy(
            prepared.pixel_values).float()))
    rng, pad = random.Random(0), text.pad_token_id

    def batch() -> dict:
        chosen = rng.sample(examples, k=min(16, len(examples)))
        width = max(len(p) + len(a) for p, a, _ in chosen)
        fill = [width - len(p) - len(a) for p, a, _ in chosen]
        return {
            "input_ids": torch.tensor([p + a + [pad] * n for (p, a, _), n in zip(chosen, fill)]),
            "labels": torch.tensor([[-100] * len(p) + a + [-100] * n
                                    for (p, a, _), n in zip(chosen, fill)]),
            "attention_mask": torch.tensor([[1] * (len(p) + len(a)) + [0] * n
                                            for (p, a, _), n in zip(chosen, fill)]),
            "pixel_values": torch.cat([x for _, _, x in chosen]),
        }  # fmt: skip

    fit(model, batch, tiny.train_steps, tiny.lr, "train demo teacher")
    model.eval().save_pretrained(path)
    return Path(path)
