"""Packs produced a few ahead in a background thread, with the loader's state as of the last pack
the step consumed (not the last one produced), so a checkpoint still resumes exactly.

Why a thread: decoding JPEGs, tiling and packing release the GIL in PIL, numpy and torch, and a
thread shares the tokenizer and processor without pickling them into worker processes; the step
and the loader then overlap instead of waiting for each other.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator

_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterates `loader`'s packs, produced up to `depth` ahead in a daemon thread.

    `state_dict()` is the loader's state right after it produced the last pack consumed here
    (before the first: the state it starts from), so loading it into a fresh loader continues
    with the next pack this one would yield. An error in the loader is raised here, where the
    pack it failed to make was wanted. `close()` (or leaving a `with` block) stops the thread.
    """

    def __init__(self, loader, depth: int = 4):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.loader, self.depth = loader, depth
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict | None = None
        self._done = False

    def state_dict(self) -> dict:
        if self._state is None:
            return copy.deepcopy(self.loader.state_dict())
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: dict) -> None:
        """Where the loader starts; only before the first pack is taken."""
        if self._thread is not None:
            raise RuntimeError("prefetcher: load_state_dict after iteration began")
        self.loader.load_state_dict(state)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, name="pack-prefetch",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.error
        pack, self._state = item
        return pack

    def _produce(self) -> None:
        packs = None
        try:
            packs = iter(self.loader)
            for pack in packs:
                # The generator is paused at its yield: its state is exactly "after this pack".
                if not self._put((pack, copy.deepcopy(self.loader.state_dict()))):
                    return
            self._put(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(_Failed(error))
        finally:
            if packs is not None and hasattr(packs, "close"):
                packs.close()  # the loader's open shard, if any

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stops the thread (it may be blocked on a full queue) and waits for it."""
        self._stop.set()
        self._done = True
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.1)
                except queue.Empty:
                    pass
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
