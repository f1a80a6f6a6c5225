"""The one completion record: a unit of work is done when its record says so, with these settings.

A unit (a shard of a step, a step over a source, a checkpoint) writes its outputs first and then a
small JSON record, atomically and last: the settings that produced it (hashed, and in full for
`evip status`) and what it covered. Records live in `<output folder>/_done/<unit>.json`. A rerun
skips units recorded with the same settings hash; units recorded with other settings are stale:
the step clears them and redoes them, so one folder never holds outputs of two settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipelines import storage

RECORDS = "_done"


def settings_hash(settings) -> str:
    """A short stable hash of JSON-able settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def table_hash(table) -> str:
    """A short hash of an Arrow table's content (its IPC bytes), so what reads the table can
    chain its settings to what the table holds rather than to where it was written from."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


def _flatten(settings, prefix: str = "") -> dict:
    if not isinstance(settings, dict):
        return {prefix.rstrip("."): settings}
    flat = {}
    for key, value in settings.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def changed_keys(old: dict, new: dict) -> list[str]:
    """Dotted paths of the settings that differ between two settings dicts."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class Plan:
    """What a step must do: units to run (new or stale) and units already complete."""

    todo: list = field(default_factory=list)
    done: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    """Units recorded with other settings (also in `todo`)."""
    changed: list[str] = field(default_factory=list)
    """Which settings changed, for the stale units."""

    def describe(self, what: str) -> str:
        text = f"{what}: {len(self.todo)} to do, {len(self.done)} already complete"
        if self.stale:
            changed = ", ".join(self.changed)
            text += f"; redoing {len(self.stale)} made with other settings ({changed})"
        return text


class CompletionLog:
    """The completion records of one output folder."""

    def __init__(self, folder: str):
        self.folder = str(folder)

    def record_url(self, unit) -> str:
        return storage.join(self.folder, RECORDS, f"{unit}.json")

    def read(self, unit) -> dict | None:
        url = self.record_url(unit)
        return storage.read_json(url) if storage.exists(url) else None

    def is_complete(self, unit, settings) -> bool:
        record = self.read(unit)
        return record is not None and record["settings_hash"] == settings_hash(settings)

    def write(self, unit, settings, covered: dict | None = None) -> dict:
        """Marks `unit` complete; call it after every output of the unit is in place."""
        record = {"unit": str(unit), "settings_hash": settings_hash(settings),
                  "settings": settings, "covered": covered or {},
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        storage.write_json(record, self.record_url(unit))
        return record

    def clear(self, unit) -> None:
        """Forgets `unit` (before its outputs are redone)."""
        storage.remove(self.record_url(unit))

    def records(self) -> dict[str, dict]:
        """Every record of the folder, by unit name."""
        pattern = storage.join(self.folder, RECORDS, "*.json")
        return {url.rsplit("/", 1)[1][: -len(".json")]: storage.read_json(url)
                for url in storage.glob(pattern)}  # fmt: skip

    def plan(self, units: Iterable, settings) -> Plan:
        """Splits `units` into done (same settings) and todo (missing or stale).

        Args:
            settings: the settings of every unit, or a function unit -> its settings.
        """
        plan, changed = Plan(), set()
        for unit in units:
            unit_settings = settings(unit) if callable(settings) else settings
            record = self.read(unit)
            if record is not None and record["settings_hash"] == settings_hash(unit_settings):
                plan.done.append(unit)
                continue
            if record is not None:
                plan.stale.append(unit)
                changed.update(changed_keys(record["settings"], unit_settings))
            plan.todo.append(unit)
        plan.changed = sorted(changed)
        return plan

    def write_error(self, unit, message: str) -> None:
        """Keeps the last error of a unit for `evip status`."""
        error = {"unit": str(unit), "error": message[-2000:],
                 "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
        storage.write_json(error, storage.join(self.folder, RECORDS, "_errors", f"{unit}.json"))

    def stale(self, settings) -> list[str]:
        """Units recorded with settings other than `settings`."""
        wanted = settings_hash(settings)
        return [u for u, r in self.records().items() if r["settings_hash"] != wanted]

    def last_error(self, unit=None) -> dict | None:
        """The last error of `unit`, or of any unit of the folder."""
        pattern = storage.join(self.folder, RECORDS, "_errors", f"{unit or '*'}.json")
        errors = [storage.read_json(url) for url in storage.glob(pattern)]
        return max(errors, key=lambda e: e["at"]) if errors else None

    def clear_errors(self, unit=None) -> None:
        """Forgets the error of `unit`, or of every unit of the folder (two steps can share one
        output folder, as `model` and `train` share `checkpoints/`: each clears its own)."""
        errors = storage.join(self.folder, RECORDS, "_errors")
        storage.remove(errors if unit is None else storage.join(errors, f"{unit}.json"))
