"""Source planning + filter + dedup at N and at 10×N rows: throughput and memory growth.

A LAION-shaped source (URL, TEXT, WIDTH, HEIGHT, similarity, punsafe, pwatermark; 1% repeated URLs)
is fabricated in files of a fixed size, so 10×N rows means 10× the files. Downloads are fabricated
too (`pipelines.synthetic.laion.FabricatedDownloader`: img2dataset's shard metadata with statuses,
sizes and sha256, 3% repeated images, no images), with one real repair round. Timed: planning (the
source files read, metadata-filtered and normalised in Ray tasks) and the filter job (filters, then
superseded attempts, URL and image duplicates over hash buckets). Each size runs in a fresh process
with a fresh local Ray, so peaks are its own: the driver's `ru_maxrss`, and the largest peak RSS
(VmHWM) of the Ray worker processes it started. Every task has a cap (a source file, a shard, a
group of shards, a hash bucket); the defaults are small enough that N already fills each task to
its cap, so 10×N shows whether anything grows past them (at the library defaults, N would have to
be millions of rows for that). Last lines: `rows_per_s` (at 10×N),
`worker_memory_growth` and `driver_memory_growth` (peak at 10×N ÷ peak at N; goal ≤ 1.25 each).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker_peak_rss() -> int:
    """Largest VmHWM (peak RSS, bytes) among this process's Ray worker descendants."""
    import psutil

    peak = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if not child.cmdline() or not child.cmdline()[0].startswith("ray::"):
                continue
            status = Path(f"/proc/{child.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
    return peak


def run_one(rows: int, rows_per_file: int, per_shard: int, shards_per_task: int,
            rows_per_bucket: int) -> dict:  # fmt: skip
    """One size, in this process: fabricate, plan (timed), download (fabricated), filter (timed)."""
    from pipelines.download import DownloadOptions
    from pipelines.filter import FilterOptions
    from pipelines.filter_job import filter_sources
    from pipelines.ingest import download_source
    from pipelines.layout import RunLayout
    from pipelines.plan import plan_source
    from pipelines.ray_runtime import RayOptions, ensure_ray
    from pipelines.sources import SourceOptions
    from pipelines.synthetic.laion import FabricatedDownloader, write_laion_files

    with tempfile.TemporaryDirectory() as folder:
        files = max(1, rows // rows_per_file)
        write_laion_files(f"{folder}/laion", rows=rows, files=files, seed=1)
        ensure_ray(RayOptions(num_cpus=2, object_store_gib=2.0))
        layout = RunLayout(f"{folder}/run")
        source = SourceOptions(name="laion", paths=[f"{folder}/laion/*.parquet"])
        download = DownloadOptions(samples_per_shard=per_shard, repair_rounds=1, max_in_flight=4)
        start = time.perf_counter()
        plan_source(source, layout.raw_folder("laion"), download.max_in_flight)
        planning = time.perf_counter() - start
        download_source(source, download, layout, make_downloader=FabricatedDownloader)
        start = time.perf_counter()
        report = filter_sources(layout, ["laion"], FilterOptions(), shards_per_task=shards_per_task,
                                rows_per_bucket=rows_per_bucket)["laion"]  # fmt: skip
        filtering = time.perf_counter() - start
        return {"rows": rows, "files": files, "planning_s": planning, "filter_s": filtering,
                "rows_per_s": rows / (planning + filtering), "kept": report["filtered"]["kept"],
                "driver_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "worker_peak": _worker_peak_rss()}  # fmt: skip


def _measure(rows: int, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.scale", "--one", str(rows),
               "--rows-per-file", str(args.rows_per_file), "--per-shard", str(args.per_shard),
               "--shards-per-task", str(args.shards_per_task),
               "--rows-per-bucket", str(args.rows_per_bucket)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=Path(__file__).parents[1])  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="N (10×N runs too)")
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--per-shard", type=int, default=5_000, help="samples per shard")
    parser.add_argument("--shards-per-task", type=int, default=4,
                        help="shards per filter map/assemble task")
    parser.add_argument("--rows-per-bucket", type=int, default=10_000,
                        help="attempts per dedup hash bucket")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.rows_per_file, args.per_shard,
                                 args.shards_per_task, args.rows_per_bucket)))
        return
    small, large = _measure(args.rows, args), _measure(10 * args.rows, args)
    mib = 2**20
    for result in (small, large):
        print(f"{result['rows']:>9,} rows in {result['files']} files: planning "
              f"{result['planning_s']:.1f} s + filter/dedup {result['filter_s']:.1f} s = "
              f"{result['rows_per_s']:,.0f} rows/s; kept {result['kept']:,}; peak RSS driver "
              f"{result['driver_peak'] / mib:.0f} MiB, largest worker "
              f"{result['worker_peak'] / mib:.0f} MiB")  # fmt: skip
    print(f"rows_per_s: {large['rows_per_s']:.0f}")
    print(f"worker_memory_growth: {large['worker_peak'] / small['worker_peak']:.3f}")
    print(f"driver_memory_growth: {large['driver_peak'] / small['driver_peak']:.3f}")


if __name__ == "__main__":
    main()
