"""Ray + img2dataset download vs a plain concurrent fetch loop of the same URLs, same concurrency.

The synthetic web runs in its own process so neither side shares a GIL with the server, and answers
after `--latency` seconds (default 50 ms, a distant host: real downloads wait on the network; at 0
the loopback makes both sides CPU-bound and img2dataset's decode, hash and tar writing dominate).
Ray is started and its workers have imported img2dataset before timing; both sides fetch the same
URLs, already rendered. Last line: `download_vs_fetch: <images/s of Ray ÷ images/s of the loop>`.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from pipelines.download import DownloadOptions, download_table
from pipelines.ray_runtime import RayOptions, ensure_ray
from pipelines.sources import sample_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


def _warm(ray, workers: int) -> None:
    """Starts the workers and imports img2dataset in each: start-up, not download time."""

    @ray.remote(num_cpus=0.5)
    def import_img2dataset():
        import img2dataset.downloader  # noqa: F401

        time.sleep(0.5)  # hold the worker so the next task lands on another one

    ray.get([import_img2dataset.remote() for _ in range(workers)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--per-shard", type=int, default=750)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    port = _free_port()
    command = [sys.executable, "-m", "pipelines.synthetic.server", "--port", str(port),
               "--latency", str(args.latency)]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()  # "serving ..." once it listens
        urls = [f"http://127.0.0.1:{port}/images/{i}.jpg" for i in range(args.images)]
        with ThreadPoolExecutor(args.threads * args.in_flight) as pool:  # render every scene once
            list(pool.map(_fetch, urls))
        table = pa.table({"sample_id": [sample_id(u) for u in urls], "url": urls,
                          "caption": ["a synthetic scene"] * len(urls)})  # fmt: skip
        ray = ensure_ray(RayOptions(num_cpus=2))
        _warm(ray, workers=4)
        options = DownloadOptions(samples_per_shard=args.per_shard, thread_count=args.threads,
                                  max_in_flight=args.in_flight, timeout=10)  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            download_table(table, Path(folder) / "raw", options)
            ray_seconds = time.perf_counter() - start
        with ThreadPoolExecutor(args.threads * args.in_flight) as pool:
            start = time.perf_counter()
            fetched = sum(1 for _ in pool.map(_fetch, urls))
            loop_seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    ray_rate, loop_rate = args.images / ray_seconds, fetched / loop_seconds
    print(
        f"ray + img2dataset: {ray_rate:8.1f} images/s ({ray_seconds:.2f} s, resize and write incl.)"
    )
    print(f"plain fetch loop:  {loop_rate:8.1f} images/s ({loop_seconds:.2f} s)")
    print(f"download_vs_fetch: {ray_rate / loop_rate:.3f}")


if __name__ == "__main__":
    main()
