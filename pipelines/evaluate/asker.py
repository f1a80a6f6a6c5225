"""One model's answers and teacher-forced log-likelihoods over batches of images and prompts.

Shared by evip's own probe loop (`evaluate.py`) and the lmms-eval model (`harness_model.py`), so
both ask exactly alike: prompts tokenized piece by piece as the training loader tokenizes a
conversation, images preprocessed by the checkpoint's own processor, greedy decoding in
left-padded batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from model.chat import IMAGE_PLACEHOLDER


def with_image(prompt: str, image) -> str:
    """The user turn: `<image>` leads the prompt when an image comes and the prompt places none."""
    if image is None or IMAGE_PLACEHOLDER in prompt:
        return prompt
    return f"{IMAGE_PLACEHOLDER}\n{prompt}"


class Asker:
    """Greedy answers, answer losses and log-likelihoods of one loaded checkpoint."""

    def __init__(self, model, tokenizer, processor, max_patches: int, batch_size: int):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.max_patches, self.batch_size = max_patches, batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, max_patches: int, batch_size: int,
                    device: str = "cpu", dtype: str | None = None) -> Asker:  # fmt: skip
        """Loads the checkpoint folder (evip's layout) onto `device`, optionally cast to `dtype`."""
        from model.from_llm import load_tokenizer
        from model.modeling import MonoInternVLForCausalLM
        from model.preprocessing import MonoInternVLImageProcessor

        model = MonoInternVLForCausalLM.from_pretrained(folder).eval()
        if dtype is not None:
            model = model.to(getattr(torch, dtype))
        model = model.to(device)
        processor = MonoInternVLImageProcessor.from_pretrained(folder)
        return cls(model, load_tokenizer(folder), processor, max_patches, batch_size)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _features(self, images):
        """(pixel values or None, visual tokens per image) of images that may be None."""
        present = [image for image in images if image is not None]
        if not present:
            return None, [0] * len(images)
        features = self.processor(images=present, return_tensors="pt",
                                  max_visual_tokens=self.max_patches)  # fmt: skip
        counts = iter(int(n) * self.processor.tokens_per_tile for n in features["num_patches"])
        pixels = features["pixel_values"].to(self.device, self.model.dtype)
        return pixels, [0 if image is None else next(counts) for image in images]

    def _prompt_ids(self, prompt: str, image, count: int) -> list[int]:
        from pipelines.loader.encode import encode_prompt

        turn = [{"from": "human", "value": with_image(prompt, image)}]
        return encode_prompt(self.tokenizer, turn, [count] if image is not None else [])

    @torch.no_grad()
    def answers(self, images: Sequence, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per (image or None, prompt), in batches of `batch_size`."""
        out = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pixels, counts = self._features(images[chunk])
            ids = [self._prompt_ids(p, image, n)
                   for p, image, n in zip(prompts[chunk], images[chunk], counts)]  # fmt: skip
            width, pad = max(map(len, ids)), self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            generated = self.model.generate(input_ids=input_ids.to(self.device),
                                            attention_mask=mask.to(self.device),
                                            pixel_values=pixels, do_sample=False,
                                            max_new_tokens=max_new_tokens, pad_token_id=pad,
                                            eos_token_id=self.tokenizer.eos_token_id)  # fmt: skip
            out += self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        return [text.strip() for text in out]

    @torch.no_grad()
    def answer_logprobs(self, image, prompt: str, answer: str) -> tuple[float, int, bool]:
        """(summed log-probability of `answer` as the assistant's turn, its tokens, whether
        greedy decoding would say exactly it), the turn's closing `<|im_end|>` included."""
        from pipelines.loader.encode import encode_conversation

        pixels, counts = self._features([image])
        talk = [{"from": "human", "value": with_image(prompt, image)},
                {"from": "gpt", "value": answer}]  # fmt: skip
        ids, labels = encode_conversation(self.tokenizer, talk, counts if image is not None else [])
        logits = self.model(input_ids=torch.tensor([ids], device=self.device),
                            pixel_values=pixels).logits[0, :-1].float()  # fmt: skip
        target = torch.tensor(labels[1:], device=self.device)
        learned = target != -100
        logprobs = F.log_softmax(logits[learned], dim=-1)
        chosen = logprobs.gather(1, target[learned, None])[:, 0]
        greedy = bool((logprobs.argmax(-1) == target[learned]).all())
        return float(chosen.sum()), int(learned.sum()), greedy

    def loss(self, images: Sequence, prompt: str, answers: Sequence[str]) -> float:
        """Mean next-token loss of each answer given its image and `prompt`."""
        total, count = 0.0, 0
        for image, answer in zip(images, answers):
            logprob, tokens, _ = self.answer_logprobs(image, prompt, answer)
            total, count = total - logprob, count + tokens
        return total / max(1, count)

    @torch.no_grad()
    def perplexity(self, texts: Sequence[str]) -> float:
        """exp(mean next-token loss) over held-out prose, text only."""
        total, count = 0.0, 0
        for text in texts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ids], device=self.device)
            logits = self.model(input_ids=ids).logits[0]
            total += F.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
        return math.exp(total / max(1, count))
