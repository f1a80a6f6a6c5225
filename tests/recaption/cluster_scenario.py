"""Recaption on a two-node local Ray cluster, losing one teacher actor, then a whole node,
mid-job (run as a script).

Run by test_cluster.py in its own process, since a test session already holds a local Ray.
First one teacher actor's process on the head is SIGKILLed (a crashed engine: the failure mode
of ray#59522, where one dead vLLM engine ends ray.data.llm's whole job), then the second node's
raylet and workers (not gracefully). Prints `actor-killed: True`, `node-removed: True`,
`nodes-with-teachers: N` and `exactly-once: True` when all went well.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray
from ray.util.state import list_actors

from recaption.job import RecaptionJob
from recaption.options import CleaningOptions, RecaptionJobOptions, TeacherOptions
from recaption.tiny_teacher import save_tiny_teacher
from tests.clusters import node_losing_cluster
from tests.recaption.conftest import GENERATION, write_shards


def main() -> int:
    root = Path(tempfile.mkdtemp())
    kept = write_shards(root, [8] * 6)
    teacher = save_tiny_teacher(root / "teacher", max_tiles=2)
    cluster = node_losing_cluster(head_cpus=4)
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()

    nodes, actor_killed, removed = set(), threading.Event(), threading.Event()
    out = root / "captions"
    head = ray.get_runtime_context().get_node_id()

    def watch():
        deadline = time.time() + 240
        while time.time() < deadline and not removed.is_set():
            actors = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
            teachers = [a for a in actors if "Caption" in a.class_name]
            nodes.update(a.node_id for a in teachers)
            written = len(list(out.glob("*.parquet")))
            on_head = [a for a in teachers if a.node_id == head and a.pid]
            if not actor_killed.is_set() and written >= 1 and on_head:
                os.kill(on_head[0].pid, signal.SIGKILL)  # one teacher dies alone
                actor_killed.set()
            elif actor_killed.is_set() and len(nodes) >= 2 and written >= 2:
                cluster.remove_node(worker, allow_graceful=False)  # a node is lost: SIGKILL
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
    print(f"actor-killed: {actor_killed.is_set()}")
    print(f"node-removed: {removed.is_set()}")
    print(f"nodes-with-teachers: {len(nodes)}")
    print(f"exactly-once: {exactly_once}")
    ray.shutdown()
    cluster.shutdown()
    survived = actor_killed.is_set() and removed.is_set() and len(nodes) >= 2
    return 0 if exactly_once and survived else 1


if __name__ == "__main__":
    sys.exit(main())
