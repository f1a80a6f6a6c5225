"""Next-token loss over the supervised positions only, in chunks: never (tokens x vocabulary).

Legend: B batch, S tokens, D width, V vocabulary, M supervised positions, C rows per chunk.

Why: S1.x supervises only the caption after hundreds of visual tokens, a few % of a pack. Full
logits at the paper's shape are 8k tokens x 92,544 x 4 bytes = 3 GB, and as much again for their
gradient. Here the LM head runs on the M supervised hidden states, C rows at a time, and each
chunk's logits are recomputed in backward instead of kept (activation checkpointing of the head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100


def next_token_loss(logits_BSV: torch.Tensor, labels_BS: torch.Tensor,
                    weights_BS: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The same loss from full logits (inference-style forward; the reference in tests)."""
    logits, labels = logits_BSV[:, :-1], labels_BS[:, 1:]
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                             ignore_index=IGNORE, reduction="none")  # fmt: skip
    weights = (labels != IGNORE).to(torch.float32)
    if weights_BS is not None:
        weights = weights * weights_BS[:, 1:].to(torch.float32)
    flat = weights.reshape(-1)
    return (losses * flat).sum() / flat.sum().clamp_min(1e-8)


def _chunk_loss_sum(head: nn.Module, hidden_CD, targets_C, weights_C) -> torch.Tensor:
    logits_CV = head(hidden_CD).float()
    losses_C = F.cross_entropy(logits_CV, targets_C, reduction="none")
    return (losses_C * weights_C).sum()


def supervised_loss(
    hidden_BSD: torch.Tensor,
    head: nn.Module,
    labels_BS: torch.Tensor,
    weights_BS: torch.Tensor | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """sum(w * CE) / sum(w) of each position's prediction of the next label.

    Args:
        hidden_BSD: the decoder's last hidden states.
        head: the LM head (called as a module, so ZeRO-3's hooks gather its weight).
        labels_BS: target ids; -100 is not learned.
        weights_BS: per-label weights (0 = not learned); None weighs every learned label 1.
        chunk: supervised rows whose logits exist at once.
    """
    labels_M = labels_BS[:, 1:]
    weights = (labels_M != IGNORE).to(torch.float32)
    if weights_BS is not None:
        weights = weights * weights_BS[:, 1:].to(torch.float32)
    where_M = weights.reshape(-1).nonzero().squeeze(1)
    hidden_MD = hidden_BSD[:, :-1].reshape(-1, hidden_BSD.shape[-1]).index_select(0, where_M)
    targets_M = labels_M.reshape(-1).index_select(0, where_M)
    weights_M = weights.reshape(-1).index_select(0, where_M)
    total = hidden_BSD.new_zeros((), dtype=torch.float32)
    if where_M.numel() == 0:  # nothing learned here: keep the graph, add zero
        return total + 0.0 * hidden_BSD.sum()
    for start in range(0, where_M.numel(), chunk):
        rows = slice(start, start + chunk)
        args = (head, hidden_MD[rows], targets_M[rows], weights_M[rows])
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss_sum, *args, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(*args)
    return total / weights_M.sum().clamp_min(1e-8)
