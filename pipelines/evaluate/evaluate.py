"""Held-out evaluation of one checkpoint folder against a probe (`pipelines/synthetic/probe.py`).

- `heldout_loss`: next-token loss of the true description given the image and the caption prompt
  (teacher forcing, the training loss on pairs the run never saw); `image_gain`: how much lower
  it is than with the wrong image (each description scored with the next one's): what the image
  tells the model;
- `caption_accuracy` (and per shape / colour / text): greedy captions scored by `scoring`;
- `grounding_accuracy`: the box answered for the first object's phrase, right at IoU >= 0.5;
- `text_perplexity`: of held-out prose, text only (delta tuning must leave it bit-for-bit alone).
Prompts are tokenized exactly as the training loader tokenizes conversations.
"""

from __future__ import annotations

import io
import json
import math

import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from model.options import FrozenOptions
from pipelines import storage
from pipelines.evaluate.scoring import accuracy, iou, parse_box, score_caption
from pipelines.stages.render import TASK_PROMPTS, box_1000
from pipelines.stages.spec import CONCEPT_PROMPT


class EvalOptions(FrozenOptions):
    """The held-out evaluation after each stage and at each stage's data milestones."""

    probe: str | None = None
    """Probe folder (images.parquet + text.parquet); null: the run's synthetic probe (demo)."""
    images: int = Field(48, gt=0)
    """Probe images captioned (and grounded)."""
    texts: int = Field(32, gt=0)
    """Held-out prose rows for perplexity."""
    prompt: str = CONCEPT_PROMPT
    """Caption prompt (the one S1.1 and S1.2 train with)."""
    max_new_tokens: int = Field(40, gt=0)
    """Longest generated answer."""
    max_patches: int = Field(1280, gt=0)
    """Visual tokens per image at most."""
    batch_size: int = Field(16, gt=0)
    """Images per generation batch."""
    cpus: float = Field(1.0, gt=0)
    """CPUs of each evaluation task (one per checkpoint)."""


PROBE_FILES = ("images.parquet", "text.parquet")
"""A probe folder: drawn or photographed images with their truth, and held-out prose."""


def load_probe(url: str, options: EvalOptions) -> tuple[list[dict], list[str]]:
    """(image rows, prose) of the probe, cut to the configured sizes."""
    images = storage.read_parquet(storage.join(url, PROBE_FILES[0])).to_pylist()
    texts = storage.read_parquet(storage.join(url, PROBE_FILES[1])).column("text").to_pylist()
    return images[: options.images], texts[: options.texts]


def truth_of(row: dict) -> dict:
    return {"objects": json.loads(row["gt_objects"]), "text": row["gt_text"] or None,
            "description": row["description"]}  # fmt: skip


def evaluate_weights(weights: str, probe: str, options: EvalOptions) -> dict:
    """Every figure of the module docstring for the checkpoint folder `weights`, plus the first
    captions next to their truth (`samples`)."""
    from model.from_llm import load_tokenizer
    from model.modeling import MonoInternVLForCausalLM
    from model.preprocessing import MonoInternVLImageProcessor
    from pipelines.model_folders import local_model_folder

    folder = local_model_folder(weights)
    model = MonoInternVLForCausalLM.from_pretrained(folder).eval()
    tokenizer = load_tokenizer(folder)
    processor = MonoInternVLImageProcessor.from_pretrained(folder)
    rows, prose = load_probe(probe, options)
    images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
    truths = [truth_of(r) for r in rows]
    ask = _Asker(model, tokenizer, processor, options)
    captions = ask.answers(images, [options.prompt] * len(images))
    scores = [score_caption(c, t) for c, t in zip(captions, truths)]
    phrases = [f"{t['objects'][0]['colour']} {t['objects'][0]['shape']}" for t in truths]
    boxes = ask.answers(images, [TASK_PROMPTS["grounding"].format(phrase=p) for p in phrases])
    grounded = []
    for answer, truth, row in zip(boxes, truths, rows):
        box, target = parse_box(answer), box_1000(truth["objects"][0]["box"], row["width"],
                                                  row["height"])  # fmt: skip
        grounded.append(box is not None and iou(box, target) >= 0.5)
    descriptions = [t["description"] for t in truths]
    loss = ask.loss(images, descriptions)
    return {
        "weights": weights,
        **accuracy(scores),
        "grounding_accuracy": sum(grounded) / len(grounded),
        "heldout_loss": loss,
        "image_gain": ask.loss(images[1:] + images[:1], descriptions) - loss,
        "text_perplexity": ask.perplexity(prose),
        "samples": [{"caption": c, "truth": t["description"]}
                    for c, t in zip(captions[:6], truths)],  # fmt: skip
    }


class _Asker:
    """One model's generation and teacher-forced losses over batches of probe images."""

    def __init__(self, model, tokenizer, processor, options: EvalOptions):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.options = options

    def _features(self, images):
        features = self.processor(images=list(images), return_tensors="pt",
                                  max_visual_tokens=self.options.max_patches)  # fmt: skip
        counts = [int(n) * self.processor.tokens_per_tile for n in features["num_patches"]]
        return features["pixel_values"].to(self.model.dtype), counts

    @torch.no_grad()
    def answers(self, images, prompts) -> list[str]:
        """Greedy answers, left-padded batches."""
        from pipelines.loader.encode import encode_prompt

        out, size = [], self.options.batch_size
        for start in range(0, len(images), size):
            pixels, counts = self._features(images[start : start + size])
            ids = [encode_prompt(self.tokenizer, [{"from": "human", "value": f"<image>\n{p}"}],
                                 [n]) for p, n in zip(prompts[start : start + size], counts)]
            width = max(map(len, ids))
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            generated = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                            pixel_values=pixels, do_sample=False,
                                            max_new_tokens=self.options.max_new_tokens,
                                            pad_token_id=pad,
                                            eos_token_id=self.tokenizer.eos_token_id)  # fmt: skip
            out += self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        return [text.strip() for text in out]

    @torch.no_grad()
    def loss(self, images, answers) -> float:
        """Mean next-token loss of each answer given its image and the caption prompt."""
        from pipelines.loader.encode import encode_conversation

        total, count = 0.0, 0
        for image, answer in zip(images, answers):
            pixels, counts = self._features([image])
            talk = [{"from": "human", "value": f"<image>\n{self.options.prompt}"},
                    {"from": "gpt", "value": answer}]  # fmt: skip
            ids, labels = encode_conversation(self.tokenizer, talk, counts)
            logits = self.model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
            target = torch.tensor(labels[1:])
            losses = F.cross_entropy(logits[:-1].float(), target, ignore_index=-100,
                                     reduction="sum")  # fmt: skip
            total, count = total + losses.item(), count + int((target != -100).sum())
        return total / max(1, count)

    @torch.no_grad()
    def perplexity(self, texts) -> float:
        """exp(mean next-token loss) over held-out prose, text only."""
        total, count = 0.0, 0
        for text in texts:
            ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])
            logits = self.model(input_ids=ids).logits[0]
            total += F.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
        return math.exp(total / max(1, count))
