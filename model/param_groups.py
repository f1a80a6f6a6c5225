"""Named parameter groups, so a curriculum stage can say what trains by name (`visual_ffn`, ...).

Every parameter belongs to exactly one group. Counts of total and per-token active parameters
show the MoE property: each token only runs its own modality's experts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from model.options import GROUPS, check_group_names

_RULES = (
    (re.compile(r"^model\.vision\."), "patch_embed"),
    (re.compile(r"\.visual_mlp\."), "visual_ffn"),
    (re.compile(r"\.self_attn\.visual_"), "visual_attention"),
    (re.compile(r"\.self_attn\."), "attention"),
    (re.compile(r"\.layers\.\d+\.mlp\."), "text_ffn"),
    (re.compile(r"^model\.embed_tokens\."), "embeddings"),
    (re.compile(r"^lm_head\."), "lm_head"),
    (re.compile(r"(layernorm|^model\.norm)\."), "norms"),
)


def group_of(name: str) -> str:
    """The group of a parameter name of `MonoInternVLForCausalLM`."""
    for pattern, group in _RULES:
        if pattern.search(name):
            return group
    raise KeyError(f"parameter {name!r} belongs to no group")



def set_trainable(model: nn.Module, groups: Iterable[str]) -> list[str]:
    """Freezes everything except `groups`; returns the names of the parameters left trainable."""
    wanted = set(check_group_names(groups))
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(group_of(name) in wanted)
        if param.requires_grad:
            trainable.append(name)
    return trainable


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of a model (tied weights counted once)."""

    by_group: dict[str, int]
    trainable: int

    @property
    def total(self) -> int:
        return sum(self.by_group.values())

    @property
    def active_per_text_token(self) -> int:
        """A text token skips the patch embedding and every visual expert."""
        skipped = ("patch_embed", "visual_ffn", "visual_attention")
        return self.total - sum(self.by_group[g] for g in skipped)

    @property
    def active_per_visual_token(self) -> int:
        """A visual token skips the text FFN, and the text attention when it has its own."""
        skipped = self.by_group["text_ffn"]
        if self.by_group["visual_attention"]:
            skipped += self.by_group["attention"]
        return self.total - skipped


def count_parameters(model: nn.Module) -> ParameterCounts:
    by_group = dict.fromkeys(GROUPS, 0)
    trainable = 0
    for name, param in model.named_parameters():
        by_group[group_of(name)] += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return ParameterCounts(by_group=by_group, trainable=trainable)
