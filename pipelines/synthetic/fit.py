"""The plain training loop of the demo's helpers (the student's pretraining, the teacher's
training): AdamW with a one-cycle schedule, clipping, a progress bar. Not the curriculum: that
runs on Ray Train (`pipelines/train`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm


def fit(model, next_batch: Callable[[], dict], steps: int, lr: float, desc: str) -> None:
    """Trains `model` for `steps` steps on `next_batch()` (model inputs with `labels`)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps))
    bar = tqdm(range(steps), desc=desc, unit="step", mininterval=2)
    for _ in bar:
        loss = model(**next_batch()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
