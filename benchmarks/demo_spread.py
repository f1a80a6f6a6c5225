"""How robust the demo's conclusion is: the curriculum over several seeds and thread counts.

One run of the demo prints one line from one machine; another machine's rounding (another
thread count, another CPU) is another draw. This script makes the data once (`evip ingest`,
`recaption`, `stages` into `<out>/data`), copies it into one run root per variant, and there runs
what the seed and the rounding change: `evip model` (the tiny student's weights and its
pretraining), `evip train` (data order, the curriculum) and `evip evaluate`. A variant is a seed
(`model.tiny_llm.seed` and `train.seed`) and a thread count (the student's pretraining under
`OMP_NUM_THREADS`, each training worker's torch threads through `train.cpus_per_worker`). The data
is the demo's (its shipped teacher); every variant pretrains its own student.

It prints one accuracy line per variant, then the spread: the smallest S1.2 - S1.1 and S2 - chance
over variants (the demo's claims: S1.2 >= S1.1 + 0.1 and S2 >= chance + 0.15 on every one) and
the slowest variant's minutes.
Usage: `python -m benchmarks.demo_spread [KEY=VALUE ...] --seeds 0 1 2 --threads 1 2`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA_FOLDERS = ["sources", "raw", "filtered", "teacher", "captions", "instructions", "stages"]
"""What the data steps make (copied into every variant's run root)."""


def evip(args: list[str], config: str, root: Path, overrides: list[str], env: dict) -> float:
    """Runs one `evip` command on run root `root`; its minutes. Output goes to `root`/log.txt."""
    start = time.time()
    command = [sys.executable, "-m", "flows.cli", *args, "--config", config,
               f"run_root={root}", *overrides]  # fmt: skip
    with open(root / "log.txt", "a") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed on {root} (exit {done.returncode}): "
                         f"see {root / 'log.txt'}")  # fmt: skip
    return (time.time() - start) / 60


def accuracies(root: Path, stages: list[str]) -> dict[str, float]:
    """caption_accuracy of init and each stage's final checkpoint, from the evaluation reports."""
    folder = root / "reports" / "eval"
    return {name: json.loads((folder / f"{name}.json").read_text())["caption_accuracy"]
            for name in ["init", *stages]}  # fmt: skip


def chance(root: Path, config) -> float:
    from pipelines.evaluate.evaluate import load_probe, truth_of
    from pipelines.evaluate.scoring import chance_accuracy

    rows, _ = load_probe(str(root / "eval" / "probe"), config.evaluate)
    return chance_accuracy([truth_of(r) for r in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--out", default="runs/demo-spread", help="folder of every run root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides for every variant, before the options (e.g. "
                             "train.stages.3.optimizer.lr=5e-4 --seeds 0 1)")
    args = parser.parse_args(argv)
    from flows.config import load_run_config

    out = Path(args.out).resolve()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = load_run_config(args.config, [f"run_root={data}", *args.overrides])
    stage_names = [s.name for s in config.train.stages]
    env = dict(os.environ, PYTHONPATH=str(Path.cwd()))
    minutes = sum(evip([step], args.config, data, args.overrides, env)
                  for step in ["ingest", "recaption", "stages"])  # fmt: skip
    print(f"data: {minutes:.1f} min (download, filter, teacher, recaption, stage shards)")
    rows = []
    for seed in args.seeds:
        for threads in args.threads:
            root = out / f"seed{seed}-threads{threads}"
            root.mkdir(exist_ok=True)
            for name in DATA_FOLDERS:
                if not (root / name).exists():
                    shutil.copytree(data / name, root / name)
            overrides = [*args.overrides, f"model.tiny_llm.seed={seed}", f"train.seed={seed}",
                         f"ray.num_cpus={max(2, 2 * threads)}",
                         f"train.cpus_per_worker={0.5 if threads == 1 else threads}"]  # fmt: skip
            # Each variant pretrains its student (the demo's seed ships one made on 2 threads).
            variant_env = dict(env, OMP_NUM_THREADS=str(threads), EVIP_SHIPPED_MODELS="0")
            took = sum(evip([step], args.config, root, overrides, variant_env)
                       for step in ["model", "train", "evaluate"])  # fmt: skip
            found = accuracies(root, stage_names)
            rows.append({"seed": seed, "threads": threads, "minutes": took, **found})
            line = " ".join(f"{k} {v:.3f}" for k, v in found.items())
            print(f"seed {seed} threads {threads}: {line} ({took:.1f} min)", flush=True)
    base = chance(out / f"seed{args.seeds[0]}-threads{args.threads[0]}", config)
    first, second, last = stage_names[0], stage_names[1], stage_names[-1]
    print(f"chance: {base:.3f}")
    for key in ["init", *stage_names]:
        values = [r[key] for r in rows]
        print(f"{key}: mean {sum(values) / len(values):.3f} range {min(values):.3f}-"
              f"{max(values):.3f}")  # fmt: skip
    print(f"s12_over_s11_min: {min(r[second] - r[first] for r in rows):.3f}")
    print(f"s2_over_chance_min: {min(r[last] - base for r in rows):.3f}")
    print(f"variant_minutes_max: {max(r['minutes'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
