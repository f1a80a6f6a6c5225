"""Teacher-caption cleaning: strip boiler-plate openings, reject what is not a caption.

A rejected caption is counted with its reason and the sample keeps its alt-text, flagged as a
fallback, never silently.
"""

from __future__ import annotations

import re
from collections import Counter

from recaption.options import CleaningOptions

_OPENINGS = re.compile(
    r"^\s*(?:in\s+)?(?:this|the)\s+(?:image|picture|photo(?:graph)?)\s+"
    r"(?:shows|depicts|features|displays|contains|presents|captures|is of)\s*:?\s*",
    flags=re.IGNORECASE,
)
_REFUSALS = re.compile(
    r"\b(?:i(?:'m| am)? (?:sorry|unable|not able)|i can(?:no|')t (?:help|see|describe|assist)|"
    r"as an ai\b|cannot (?:determine|identify) (?:the|what))",
    flags=re.IGNORECASE,
)


def _too_repetitive(words: list[str], max_fraction: float) -> bool:
    if len(words) < 4:
        return False
    lowered = [w.lower().strip(".,;:!?") for w in words]
    grams = [lowered, list(zip(lowered, lowered[1:]))]
    return any(Counter(g).most_common(1)[0][1] / len(g) > max_fraction for g in grams if g)


def _cap_length(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    sentence_end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence_end > max_chars // 3:
        return cut[: sentence_end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "."


def clean_caption(raw: str, options: CleaningOptions) -> tuple[str | None, str | None]:
    """Returns (clean caption, None), or (None, reason) when the caption is rejected.

    Reasons: `empty`, `refusal`, `repetition`.
    """
    text = " ".join((raw or "").split())
    text = _OPENINGS.sub("", text)
    text = text[:1].upper() + text[1:]
    words = text.split()
    if len(words) < options.min_words:
        return None, "empty"
    if _REFUSALS.search(text):
        return None, "refusal"
    if _too_repetitive(words, options.max_repeat_fraction):
        return None, "repetition"
    return _cap_length(text, options.max_chars), None
