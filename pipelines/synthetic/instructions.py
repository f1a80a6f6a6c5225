"""Instruction data for the demo's S2 stage, made from the synthetic web's ground truth.

For each kept sample of a source (one Ray task per raw shard): its image under
`instructions/<source>/images/`, and a multi-turn conversation from its drawn objects and text
(what is there, the colour of one shape, the written words, where a shape is), plus a few
text-only rows; written as the InternVL meta JSON + LLaVA JSONL that S2 imports.
"""

from __future__ import annotations

import json
import zlib

from pipelines import storage
from pipelines.layout import RunLayout, shard_name
from pipelines.records import iter_kept_samples
from pipelines.scheduler import run_bounded
from pipelines.stages.render import TASK_PROMPTS
from pipelines.stages.spec import CONCEPT_PROMPT

DESCRIBE = ["What is in this picture?", CONCEPT_PROMPT, TASK_PROMPTS["caption"],
            "Describe this image."]
"""How a conversation first asks for the whole scene: as instruction data asks for captions in
many words, the pretraining stages' prompts among them (the probe asks with S1's)."""

TEXT_ONLY = [("What is a triangle?", "A shape with three straight sides."),
             ("Name a primary colour.", "Red.")]  # fmt: skip


def conversation_for(meta: dict) -> list[dict] | None:
    """A multi-turn conversation about one drawn scene, or None without ground truth."""
    objects = json.loads(meta.get("gt_objects") or "[]")
    if not meta.get("gt_description") or not objects:
        return None
    first = objects[0]
    ask = DESCRIBE[zlib.crc32(meta["gt_description"].encode()) % len(DESCRIBE)]
    talk = [{"from": "human", "value": f"<image>\n{ask}"},
            {"from": "gpt", "value": meta["gt_description"]},
            {"from": "human", "value": f"What colour is the {first['shape']}?"},
            {"from": "gpt", "value": f"It is {first['colour']}."}]  # fmt: skip
    if (meta.get("gt_text") or "").strip():
        talk += [{"from": "human", "value": "What does the text say?"},
                 {"from": "gpt", "value": meta["gt_text"].strip()}]  # fmt: skip
    return talk


def _shard(shared, shard: int) -> int:
    root, source = shared
    layout = RunLayout(root)
    folder = storage.join(layout.instructions(), source)
    rows = []
    for sample in iter_kept_samples(layout.raw_folder(source).shard(shard, "tar"),
                                    layout.keep_list(source, shard)):  # fmt: skip
        talk = conversation_for(sample["meta"])
        if talk is None:
            continue
        image = f"images/{sample['key']}.jpg"
        storage.write_bytes(sample["jpg"], storage.join(folder, image))
        rows.append({"id": sample["sample_id"], "image": image, "conversations": talk})
    rows += [{"id": f"text-{shard}-{i}", "conversations": [{"from": "human", "value": q},
              {"from": "gpt", "value": a}]} for i, (q, a) in enumerate(TEXT_ONLY)]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows)
    storage.write_bytes(text.encode(), storage.join(folder, f"{shard_name(shard)}.jsonl"))
    return len(rows)


def write_demo_instructions(layout: RunLayout, source: str, shards: list[int]) -> str:
    """Writes the source's demo instruction data; returns the meta JSON's URL."""
    counts = dict(zip(shards, run_bounded(_shard, shards, shared=(layout.root, source),
                                          desc="demo instructions")))  # fmt: skip
    meta = {f"{source}-{shard_name(s)}": {"root": source, "data_augment": False,
                                           "annotation": f"{source}/{shard_name(s)}.jsonl",
                                           "repeat_time": 1, "length": counts[s]}
            for s in shards}  # fmt: skip
    url = storage.join(layout.instructions(), "meta.json")
    storage.write_json(meta, url)
    return url
