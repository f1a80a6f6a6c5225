"""Packing encoded samples into fixed token budgets, as InternVL's packed dataset does.

Samples wait in a buffer; a pack is filled from it largest first (first-fit decreasing), so packs
come out nearly full. A sample is never split (an image never straddles two packs); one longer
than the budget is refused. In a pack, position ids restart at 0 for each sample and every token
carries its sample's index, so no token attends across samples (the model's `sample_ids`).
Deterministic: the same samples in the same order give the same packs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipelines.loader.encode import IGNORE


@dataclass
class Encoded:
    """One sample ready to pack; `position` says where it was read (for resuming)."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: np.ndarray  # (tiles, 3, H, W); zero tiles for a text-only sample
    position: tuple = ()
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)


def collate_pack(samples: list[Encoded], max_tokens: int, pad_id: int,
                 loss_reduction: str = "token") -> dict:  # fmt: skip
    """One packed row (batch of 1) of `max_tokens` tokens, padded at the end.

    `loss_weights` weigh each learned token: 1 for a per-token mean ("token"), or 1/sqrt(the
    sample's learned tokens) for InternVL's square-root averaging ("sqrt"), which keeps long
    answers from drowning short ones; the loss is sum(w * l) / sum(w).
    """
    ids, labels, positions, sample_ids, weights = [], [], [], [], []
    for index, sample in enumerate(samples):
        ids += sample.input_ids
        labels += sample.labels
        positions += list(range(len(sample)))
        sample_ids += [index] * len(sample)
        learned = sum(label != IGNORE for label in sample.labels)
        weight = 1.0 if loss_reduction == "token" else 1.0 / max(1, learned) ** 0.5
        weights += [weight if label != IGNORE else 0.0 for label in sample.labels]
    pad = max_tokens - len(ids)
    if pad < 0:
        raise ValueError(f"pack of {len(ids)} tokens exceeds {max_tokens}")
    tiles = [s.pixel_values for s in samples if len(s.pixel_values)]
    return {
        "input_ids": torch.tensor([ids + [pad_id] * pad]),
        "labels": torch.tensor([labels + [IGNORE] * pad]),
        "position_ids": torch.tensor([positions + [0] * pad]),
        "sample_ids": torch.tensor([sample_ids + [len(samples)] * pad]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * pad]),
        "loss_weights": torch.tensor([weights + [0.0] * pad]),
        "pixel_values": torch.from_numpy(np.concatenate(tiles)) if tiles else None,
        "num_samples": len(samples),
        "num_tokens": len(ids),
    }


class Packer:
    """Buffers samples and hands out packs of at most `max_tokens` tokens."""

    def __init__(self, max_tokens: int, buffer_size: int = 32):
        self.max_tokens, self.buffer_size = max_tokens, buffer_size
        self.buffer: list[Encoded] = []

    def fits(self, sample: Encoded) -> bool:
        return 0 < len(sample) <= self.max_tokens

    def add(self, sample: Encoded) -> list[list[Encoded]]:
        """Adds a sample (one that `fits`); returns the packs that are ready."""
        self.buffer.append(sample)
        packs = []
        while len(self.buffer) >= self.buffer_size:
            packs.append(self._take_pack())
        return packs

    def flush(self) -> list[list[Encoded]]:
        """The remaining samples as packs (the end of the data)."""
        packs = []
        while self.buffer:
            packs.append(self._take_pack())
        return packs

    def _take_pack(self) -> list[Encoded]:
        # Largest first, ties in arrival order; the oldest sample always goes, so none starves.
        order = sorted(range(1, len(self.buffer)), key=lambda i: (-len(self.buffer[i]), i))
        chosen, room = [0], self.max_tokens - len(self.buffer[0])
        for i in order:
            if len(self.buffer[i]) <= room:
                chosen.append(i)
                room -= len(self.buffer[i])
        pack = [self.buffer[i] for i in sorted(chosen)]
        self.buffer = [s for i, s in enumerate(self.buffer) if i not in set(chosen)]
        return pack
