"""Caption cleaning: boiler-plate stripped; empty, refusals and runaway repetition rejected."""

from __future__ import annotations

import pytest

from recaption.cleaning import clean_caption
from recaption.options import CleaningOptions, TeacherOptions
from recaption.prompts import prompt_for

OPTIONS = CleaningOptions()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            "The image shows a red circle on a blue background.",
            "A red circle on a blue background.",
        ),
        ("In this picture depicts: two cats  on a\nsofa.", "Two cats on a sofa."),
        ("A green square next to a yellow triangle.", "A green square next to a yellow triangle."),
    ],
)
def test_boilerplate_openings_are_stripped(raw, clean):
    assert clean_caption(raw, OPTIONS) == (clean, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"), ("\n\n\n\n", "empty"), ("The image shows", "empty"),
        ("I'm sorry, I can't help with identifying people.", "refusal"),
        ("As an AI I cannot see images properly here.", "refusal"),
        ("cat cat cat cat cat cat dog", "repetition"),
        ("a red a red a red a red a red a red a red", "repetition"),
    ],
)  # fmt: skip
def test_rejections_carry_their_reason(raw, reason):
    assert clean_caption(raw, OPTIONS) == (None, reason)


def test_length_is_capped_at_a_boundary():
    raw = "A red circle on a blue background. " * 20
    clean, reason = clean_caption(raw, CleaningOptions(max_chars=100, max_repeat_fraction=1.0))
    assert reason is None and len(clean) <= 100 and clean.endswith(".")


def test_prompt_choice_is_stable_and_spread():
    prompts = TeacherOptions().prompts
    ids = [f"{i:016x}" for i in range(0, 3000, 7)]
    assert [prompt_for(i, prompts) for i in ids] == [prompt_for(i, prompts) for i in ids]
    assert {prompt_for(i, prompts) for i in ids} == set(prompts)
    with pytest.raises(ValueError, match="prompts"):
        TeacherOptions(prompts=[])
