"""Prompt variants for S1.2 semantic captions (paper section 3.2).

The intent: short captions stating objects, their relations and world knowledge, without the
noise of alt-text (photographer, date, stock-site boiler-plate).
"""

import zlib

DEFAULT_PROMPTS = (
    "Describe this image in one short sentence: the main objects, how they relate, and any "
    "well-known thing it shows. Do not mention the photographer, the date or the website.",
    "Write a concise caption for this image naming what is in it and where things are. "
    "Leave out camera details, credits and dates.",
    "In one sentence, what does this image show? Include visible text if there is any.",
)


def prompt_for(sample_id: str, prompts: tuple[str, ...] | list[str]) -> str:
    """The prompt variant a sample gets: fixed by its id, so a rerun asks the same question."""
    return prompts[zlib.crc32(sample_id.encode("utf-8")) % len(prompts)]
