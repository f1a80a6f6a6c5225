"""Recaption on a two-node local Ray cluster, losing one node mid-job (run as a script).

Run by test_cluster.py in its own process, since a test session already holds a local Ray.
Prints `nodes-with-teachers: N` and `exactly-once: True` when all went well.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from recaption.job import RecaptionJob
from recaption.options import CleaningOptions, RecaptionJobOptions, TeacherOptions
from recaption.tiny_teacher import save_tiny_teacher
from tests.recaption.conftest import GENERATION, write_shards


def main() -> int:
    root = Path(tempfile.mkdtemp())
    kept = write_shards(root, [10] * 8)
    teacher = save_tiny_teacher(root / "teacher", max_tiles=2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()

    nodes, removed = set(), threading.Event()
    out = root / "captions"

    def watch():
        deadline = time.time() + 240
        while time.time() < deadline and not removed.is_set():
            actors = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
            nodes.update(a.node_id for a in actors if "Caption" in a.class_name)
            if len(nodes) >= 2 and len(list(out.glob("*.parquet"))) >= 2:
                cluster.remove_node(worker)  # a node is lost mid-job
                removed.set()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    options = TeacherOptions(path=str(teacher), max_tiles=2, generation=GENERATION)
    job = RecaptionJob(str(teacher), options, CleaningOptions(),
                       RecaptionJobOptions(actors=2, cpus_per_actor=1.0, batch_size=2,
                                           preprocess_batch_size=2))  # fmt: skip
    report = job.run(root / "raw", root / "filtered", out)
    watcher.join(timeout=5)
    done = {int(p.stem): [r["key"] for r in pq.read_table(p).to_pylist()]
            for p in out.glob("*.parquet")}  # fmt: skip
    exactly_once = done == {s: sorted(k) for s, k in kept.items()}
    print(f"report: {report}")
    print(f"node-removed: {removed.is_set()}")
    print(f"nodes-with-teachers: {len(nodes)}")
    print(f"exactly-once: {exactly_once}")
    ray.shutdown()
    cluster.shutdown()
    return 0 if exactly_once and removed.is_set() and len(nodes) >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
