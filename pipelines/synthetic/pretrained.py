"""The demo's teacher and student as shipped checkpoints: trained once with evip, kept in the
package, copied into a run whose settings are exactly the ones they were made with.

Why: a real run starts from checkpoints someone else trained (InternLM2-1.8B, InternVL-8B); the
demo trains tiny stand-ins on its synthetic web (`recaption/demo_teacher.py`,
`pipelines/synthetic/student.py`), which took half of its time (~8 of 15 minutes on 2 cores) and
bought nothing a second time. Any other settings (another seed, fewer steps, another web) train
them in the run as before. A folder is shipped with the completion record of the run that made it,
so a match is decided by the same settings hash as every other unit.

Remake them (after changing what they learn from or how): `python -m pipelines.synthetic.pretrained
--config configs/demo.yaml` trains both in a temporary run root and ships them (~8 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipelines.completion import settings_hash

SHIPPED = Path(__file__).parent / "pretrained"
RECORD = "evip-record.json"
"""The completion record of the run that made a shipped folder (not copied into runs)."""


def shipped(name: str, settings: dict) -> Path | None:
    """The shipped folder `name` when it was made with exactly `settings`, else None (always
    None under `EVIP_SHIPPED_MODELS=0`: what a machine's own training gives, for
    `benchmarks.demo_spread`'s thread counts, which no setting records)."""
    record = SHIPPED / name / RECORD
    if os.environ.get("EVIP_SHIPPED_MODELS") == "0" or not record.exists():
        return None
    return SHIPPED / name if json.loads(record.read_text())["settings_hash"] == settings_hash(
        settings) else None  # fmt: skip


def shipped_or(name: str, settings: dict, make: Callable[[Path], object]):
    """A model folder's `write`: the shipped copy when its settings match, else `make`."""

    def write(local: Path) -> None:
        source = shipped(name, settings)
        if source is None:
            make(local)
            return
        print(f"{name}: the shipped checkpoint made with these settings ({source})")
        shutil.copytree(source, local, dirs_exist_ok=True, ignore=shutil.ignore_patterns(RECORD))

    return write


def ship(config) -> list[Path]:
    """Trains the demo's teacher and student for `config` in a temporary run root (nothing
    shipped used) and ships both with their records, in place of what was shipped."""
    from flows.model_demo import llm_path
    from flows.recaption import teacher_path
    from pipelines.layout import RunLayout

    os.environ["EVIP_SHIPPED_MODELS"] = "0"
    with tempfile.TemporaryDirectory() as root:
        config = config.model_copy(update={"run_root": root})
        layout = RunLayout(root)
        made = [(Path(teacher_path(config)), Path(layout.teacher())),
                (llm_path(config), Path(layout.llm()))]  # fmt: skip
        shutil.rmtree(SHIPPED, ignore_errors=True)
        for folder, parent in made:
            shutil.copytree(folder, SHIPPED / folder.name)
            shutil.copy(parent / "_done" / f"{folder.name}.json", SHIPPED / folder.name / RECORD)
    return [SHIPPED / folder.name for folder, _ in made]


def main(argv: list[str] | None = None) -> None:
    from flows.config import load_run_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml", help="the run config")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides")
    args = parser.parse_args(argv)
    for folder in ship(load_run_config(args.config, args.overrides)):
        print(f"shipped {folder}")


if __name__ == "__main__":
    main()
