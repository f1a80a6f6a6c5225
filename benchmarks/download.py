"""Ray + img2dataset download vs img2dataset's own multiprocessing run vs a plain fetch loop.

Three sides fetch the same URLs from one synthetic web: evip (`download_table`: img2dataset shard
by shard as Ray tasks, `--in-flight` at a time), what a user would run instead of evip (the same
parquet through `img2dataset.download` with its multiprocessing distributor: `--in-flight`
processes, the same threads, samples per shard, resize, encode, hash and header settings as evip's
DownloadOptions, webdataset output), and a concurrent fetch loop with no resize or write.

The synthetic web runs in its own process so no side shares a GIL with the server, and answers
after `--latency` seconds (default 50 ms, a distant host: real downloads wait on the network; at 0
the loopback makes every side CPU-bound and img2dataset's decode, hash and tar writing dominate).
Every scene is rendered once before timing. Only the download is timed: Ray is started and its
workers have imported img2dataset and `pipelines.download` beforehand; img2dataset's run is timed
from the start of its first shard (its spawned processes are up and have imported img2dataset) to
its return, and runs before Ray starts, as a user's would. Images/s counts successes (the shards'
`_stats.json`). Last two lines: `download_vs_img2dataset: <images/s of Ray ÷ images/s of
img2dataset alone>` and `download_vs_fetch: <images/s of Ray ÷ images/s of the loop>`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# evip's own modules (they pull in torch) are imported inside main(): img2dataset's processes are
# spawned, and each re-imports this module, which a user's plain img2dataset script would not cost.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


def _warm(ray, workers: int) -> None:
    """Starts the workers and imports img2dataset and evip's download task in each (the latter
    pulls in torch through `model`): start-up, not download time."""

    @ray.remote(num_cpus=0.5)
    def import_img2dataset():
        import img2dataset.downloader  # noqa: F401

        import pipelines.download  # noqa: F401

        time.sleep(0.5)  # hold the worker so the next task lands on another one

    ray.get([import_img2dataset.remote() for _ in range(workers)])


def _shard_stats(folder: Path) -> list[dict]:
    """img2dataset's per-shard stats (count, successes, start_time, end_time, ...)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*_stats.json"))]


def _img2dataset_alone(table: pa.Table, folder: Path, options) -> tuple[int, float, float]:
    """The same input through img2dataset's own multiprocessing distributor, set up as evip's.

    Returns:
        (successes, seconds from its first shard's start to its return, seconds of start-up
        before that: spawning its processes, importing img2dataset, sharding the input).
    """
    from img2dataset import download

    input_path = folder / "input.parquet"
    pq.write_table(table, input_path)
    extra = [c for c in table.column_names if c not in ("url", "caption")]
    start = time.time()
    download(
        url_list=str(input_path), output_folder=str(folder / "raw"), input_format="parquet",
        url_col="url", caption_col="caption", save_additional_columns=extra,
        output_format="webdataset", distributor="multiprocessing",
        processes_count=options.max_in_flight, thread_count=options.thread_count,
        number_sample_per_shard=options.samples_per_shard, max_shard_retry=options.shard_retries,
        image_size=options.image_size, resize_mode=options.resize_mode, resize_only_if_bigger=True,
        upscale_interpolation="lanczos", downscale_interpolation="area", encode_quality=95,
        encode_format="jpg", skip_reencode=True, disable_all_reencoding=False,
        min_image_size=options.min_image_size, max_image_area=options.max_image_area,
        extract_exif=False, timeout=options.timeout, oom_shard_count=5, compute_hash="sha256",
        retries=0, user_agent_token=None,
        disallowed_header_directives=options.disallowed_header_directives,
    )  # fmt: skip
    end = time.time()
    stats = _shard_stats(folder / "raw")
    first = min(s["start_time"] for s in stats)
    return sum(s["successes"] for s in stats), end - first, first - start


def main() -> None:
    from pipelines.download import DownloadOptions, download_table
    from pipelines.ray_runtime import WORKER_ENV, RayOptions, ensure_ray
    from pipelines.sources import sample_id

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--per-shard", type=int, default=750)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()

    os.environ.update(WORKER_ENV)  # img2dataset's own processes skip the same update check
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
        options = DownloadOptions(samples_per_shard=args.per_shard, thread_count=args.threads,
                                  max_in_flight=args.in_flight, timeout=10)  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            alone_ok, alone_seconds, alone_startup = _img2dataset_alone(
                table, Path(folder), options
            )
        ray = ensure_ray(RayOptions(num_cpus=2))
        _warm(ray, workers=4)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            download_table(table, Path(folder) / "raw", options)
            ray_seconds = time.perf_counter() - start
            ray_ok = sum(s["successes"] for s in _shard_stats(Path(folder) / "raw"))
        with ThreadPoolExecutor(args.threads * args.in_flight) as pool:
            start = time.perf_counter()
            fetched = sum(1 for _ in pool.map(_fetch, urls))
            loop_seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    ray_rate, alone_rate = ray_ok / ray_seconds, alone_ok / alone_seconds
    loop_rate = fetched / loop_seconds
    print(
        f"ray + img2dataset:   {ray_rate:8.1f} images/s ({ray_ok}/{args.images} in "
        f"{ray_seconds:.2f} s, resize and write incl.)"
    )
    print(
        f"img2dataset alone:   {alone_rate:8.1f} images/s ({alone_ok}/{args.images} in "
        f"{alone_seconds:.2f} s, multiprocessing x{args.in_flight}; "
        f"+{alone_startup:.2f} s start-up not timed)"
    )
    print(f"plain fetch loop:    {loop_rate:8.1f} images/s ({fetched} in {loop_seconds:.2f} s)")
    print(f"download_vs_img2dataset: {ray_rate / alone_rate:.3f}")
    print(f"download_vs_fetch: {ray_rate / loop_rate:.3f}")


if __name__ == "__main__":
    main()
