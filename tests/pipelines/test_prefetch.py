"""Packs prefetched in a thread: the loader's packs in its order, a state that resumes exactly after
the last pack consumed, the loader's errors raised in the consumer, and a clean stop."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from model.preprocessing import MonoInternVLImageProcessor
from pipelines.loader.prefetch import Prefetcher
from pipelines.loader.stage_loader import StageLoader
from tests.conftest import tiny_config
from tests.pipelines.test_stage_loader import write_stage

KEYS = ("input_ids", "labels", "position_ids", "sample_ids", "loss_weights", "pixel_values")


@pytest.fixture
def urls(tmp_path):
    return write_stage(tmp_path, shards=3, per_shard=5)


@pytest.fixture
def loader(urls, tokenizer):
    processor = MonoInternVLImageProcessor.from_model_config(tiny_config(), max_patches=6)

    def make(epochs: int | None = 2):
        return StageLoader(urls, tokenizer, processor, max_patches=24, max_tokens=160,
                           buffer_size=4, seed=3, epochs=epochs, report=lambda m: None)  # fmt: skip

    return make


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in KEYS)


def test_the_same_packs_in_the_same_order_as_the_loader_alone(loader):
    alone = list(loader())
    with Prefetcher(loader(), depth=2) as packs:
        _same(list(packs), alone)
    assert len(alone) > 6


def test_the_state_after_k_consumed_packs_resumes_with_pack_k_plus_1(loader):
    alone, k = list(loader()), 5
    packs = Prefetcher(loader(), depth=3)
    taken = [next(packs) for _ in range(k)]
    while packs._queue.qsize() < 3:  # the thread has run ahead of what was consumed
        threading.Event().wait(0.01)
    state = json.loads(json.dumps(packs.state_dict()))  # what a checkpoint keeps
    assert state != json.loads(json.dumps(packs.loader.state_dict()))  # not the loader's own
    packs.close()
    _same(taken, alone[:k])
    resumed = Prefetcher(loader(), depth=3)
    resumed.load_state_dict(state)
    with resumed:
        _same(list(resumed), alone[k:])
    fresh = Prefetcher(loader())
    assert fresh.state_dict() == loader().state_dict()  # before any pack: the starting state


def test_an_error_in_the_loader_is_raised_in_the_consumer(loader):
    class Broken:
        def __init__(self, inner, after: int):
            self.inner, self.after = inner, after

        def state_dict(self):
            return self.inner.state_dict()

        def __iter__(self):
            for index, pack in enumerate(self.inner):
                if index == self.after:
                    raise OSError("disk gone")
                yield pack

    packs = Prefetcher(Broken(loader(), after=2), depth=4)
    assert len([next(packs), next(packs)]) == 2
    with pytest.raises(OSError, match="disk gone"):
        next(packs)
    with pytest.raises(StopIteration):
        next(packs)
    packs.close()
    assert not packs._thread.is_alive()


def test_close_stops_a_thread_blocked_on_a_full_queue(loader):
    packs = Prefetcher(loader(epochs=None), depth=1)  # endless: the thread never ends alone
    next(packs)
    packs.close()
    assert not packs._thread.is_alive()
    with pytest.raises(StopIteration):
        next(packs)
    with pytest.raises(RuntimeError, match="after iteration began"):
        packs.load_state_dict({})
