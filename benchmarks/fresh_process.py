"""A benchmark's call run in a new Python process under chosen glibc malloc settings: memory
figures that no earlier variant inflates, timings under an allocator that caches as a GPU's does."""

from __future__ import annotations

import ast
import os
import resource
import subprocess
import sys
from pathlib import Path

MAP_EACH_TENSOR = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""A fixed mmap threshold: every tensor over 64 kB is mapped and unmapped on its own, so the
resident set follows live tensors (glibc's adaptive threshold would keep freed ones in heaps)."""

KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**62)}
"""Freed memory reused, never handed back: a caching allocator."""


def in_fresh_process(module: str, call: str, malloc_env: dict[str, str]):
    """`call` (an expression over `module`'s names) evaluated in a new Python process with glibc
    malloc settings (glibc reads them at start-up only); its result, a literal, returned here."""
    code = f"from {module} import *; print(repr({call}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **malloc_env},
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{call}: the measuring process failed:\n{done.stderr[-2000:]}")
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


def rss_mb() -> float:
    """This process's resident set now (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """This process's largest resident set so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
