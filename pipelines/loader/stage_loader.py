"""Packed batches from one stage's shards, for one (node, worker), with an exactly resumable state.

Shard i of the stage belongs to reader `i % world` (`rank = node * workers + worker`); each epoch
visits this reader's shards in an order drawn from (seed, epoch). A sample is decoded, tiled by
the model's processor within the stage's max patches, encoded (answers-only loss) and packed.
`state_dict()` names where the next sample is and which samples sit in the packer (by position),
so `load_state_dict()` rebuilds exactly the batches an uninterrupted run would have produced.
A truncated tar or an undecodable image is reported with its shard and key, counted, and skipped.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from pipelines.loader.encode import ConversationError, encode_conversation
from pipelines.loader.pack import Encoded, Packer, collate_pack
from pipelines.records import iter_tar


def image_fields(sample: dict) -> list[str]:
    """A stage sample's images in `<image>` order: `jpg`, then a multi-image row's `1.jpg`, ..."""
    fields = ["jpg"] if "jpg" in sample else []
    while f"{len(fields)}.jpg" in sample:
        fields.append(f"{len(fields)}.jpg")
    return fields


class StageLoader:
    """Iterates packed batches (dicts of tensors) over a stage's webdataset shards."""

    def __init__(self, shards: list[str], tokenizer, processor, *, max_patches: int,
                 max_tokens: int, rank: int = 0, world: int = 1, seed: int = 0,
                 buffer_size: int = 32, epochs: int | None = 1, loss_reduction: str = "token",
                 report: Callable[[str], None] = print):  # fmt: skip
        if loss_reduction not in ("token", "sqrt"):
            raise ValueError(f"loss_reduction must be token or sqrt, got {loss_reduction!r}")
        self.loss_reduction = loss_reduction
        self.mine = [url for i, url in enumerate(sorted(shards)) if i % world == rank]
        self.tokenizer, self.processor, self.report = tokenizer, processor, report
        self.max_patches, self.max_tokens, self.seed = max_patches, max_tokens, seed
        self.buffer_size, self.epochs = buffer_size, epochs
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.skipped: Counter = Counter()
        self._state = {"epoch": 0, "cursor": 0, "offset": 0, "buffer": [], "ready": []}

    # where the data is
    def order(self, epoch: int) -> list[str]:
        rng = np.random.default_rng([self.seed, epoch])
        return [self.mine[i] for i in rng.permutation(len(self.mine))]

    def _samples(self, url: str, start: int = 0) -> Iterator[tuple[int, dict]]:
        offset = -1
        try:
            for offset, sample in enumerate(iter_tar(url)):
                if offset >= start:
                    yield offset, sample
        except Exception as error:  # a truncated or corrupt tar: the rest of it is lost
            self.skipped["truncated_shard"] += 1
            self.report(f"loader: {url} unreadable after sample {offset + 1}: "
                        f"{type(error).__name__}: {error}; skipping the rest of it")  # fmt: skip

    # one sample
    def encode(self, sample: dict, position: tuple) -> Encoded | None:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        where = f"{position[2]} key {sample.get('__key__')}"
        try:
            image_tokens, tiles = self._tiles(sample)
            ids, labels = encode_conversation(self.tokenizer, meta["conversations"], image_tokens)
        except ConversationError as error:
            return self._skip("bad_conversation", where, error)
        except Exception as error:  # an undecodable image
            return self._skip("bad_image", where, error)
        encoded = Encoded(ids, labels, tiles, position, meta)
        if len(encoded) > self.max_tokens:
            return self._skip("too_long", where, f"{len(encoded)} > {self.max_tokens} tokens")
        return encoded

    def _tiles(self, sample: dict) -> tuple[list[int], np.ndarray]:
        """(visual tokens per image, tiles of every image); a row's images share the stage's
        patch budget, as InternVL divides its tiles among a multi-image row's images."""
        fields, tokens, tiles = image_fields(sample), [], [np.zeros((0, 3, 1, 1), np.float32)]
        budget = self.max_patches // max(1, len(fields))
        for field in fields:
            image = Image.open(io.BytesIO(sample[field])).convert("RGB")
            features = self.processor(images=[image], return_tensors="np",
                                      max_visual_tokens=budget)  # fmt: skip
            tiles.append(features["pixel_values"])
            tokens.append(int(features["num_patches"][0]) * self.processor.tokens_per_tile)
        return tokens, np.concatenate(tiles[1:]) if fields else tiles[0]

    def _skip(self, reason: str, where: str, error) -> None:
        self.skipped[reason] += 1
        self.report(f"loader: skipping {where}: {reason}: {error}")
        return None

    # the resumable stream
    def state_dict(self) -> dict:
        return {**self._state, "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        self._state = {k: state[k] for k in ("epoch", "cursor", "offset", "buffer", "ready")}
        self.skipped = Counter(state.get("skipped", {}))

    def _reread(self, positions: list) -> dict[tuple, Encoded]:
        """Samples at `positions` ((epoch, cursor, url, offset)), read again."""
        wanted, found = {tuple(p) for p in positions}, {}
        for url in sorted({p[2] for p in wanted}):
            offsets = {p[3]: p for p in wanted if p[2] == url}
            for offset, sample in self._samples(url):
                if offset in offsets:
                    found[offsets[offset]] = self.encode(sample, offsets[offset])
                if len(found) == len(wanted):
                    break
        return found

    def __iter__(self) -> Iterator[dict]:
        state, packer = self._state, Packer(self.max_tokens, self.buffer_size)
        saved = state["buffer"] + [p for pack in state["ready"] for p in pack]
        again = self._reread(saved) if saved else {}
        packer.buffer = [again[tuple(p)] for p in state["buffer"]]
        ready = [[again[tuple(p)] for p in pack] for pack in state["ready"]]

        def emit():
            while ready:
                pack = ready.pop(0)
                state["ready"] = [[s.position for s in p] for p in ready]
                state["buffer"] = [s.position for s in packer.buffer]
                yield collate_pack(pack, self.max_tokens, self.pad_id, self.loss_reduction)

        yield from emit()
        while self.epochs is None or state["epoch"] < self.epochs:
            order, usable = self.order(state["epoch"]), False
            whole = state["cursor"] == 0 and state["offset"] == 0  # not a resumed epoch
            while state["cursor"] < len(order):
                url = order[state["cursor"]]
                for offset, sample in self._samples(url, state["offset"]):
                    state["offset"] = offset + 1
                    encoded = self.encode(sample, (state["epoch"], state["cursor"], url, offset))
                    if encoded is not None:
                        usable = True
                        ready += packer.add(encoded)
                        yield from emit()
                state["cursor"], state["offset"] = state["cursor"] + 1, 0
            if whole and not usable:  # endless epochs of nothing: a dead end, not a wait
                raise RuntimeError(f"loader: no usable sample in a whole epoch of {len(order)} "
                                   f"shards (skipped: {dict(self.skipped)})")
            ready += packer.flush()  # an epoch's last packs
            state["epoch"], state["cursor"] = state["epoch"] + 1, 0
            yield from emit()
