"""A training stage on a two-node local Ray cluster whose worker node is lost mid-stage (run as a
script: the test session already holds a local Ray).

The head has no CPUs, so both Ray Train workers (DeepSpeed, gloo) run on the worker node. Once
Ray Train has registered a checkpoint, that node's raylet and workers are SIGKILLed (not
gracefully) and a replacement node joins, as an autoscaler or KubeRay brings one: Ray Train's
FailureConfig restarts the worker group there and it resumes from the checkpoint. Prints
`node-removed: True`, `steps: N`, `resumed-from: N`, `losses-falling: True` when all went well.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import ray

from tests.clusters import node_losing_cluster
from tests.pipelines.test_train_job import _losses, _registered, _stage, _train, make_run

STEPS = 8


def main() -> int:
    root = Path(tempfile.mkdtemp())
    layout = make_run(root, stages=("S1.1",))
    cluster = node_losing_cluster(head_cpus=0)
    node = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()

    outcome = {}
    stage = _stage("S1.1", ["patch_embed", "visual_ffn"], zero=2, steps=STEPS)
    trainer = threading.Thread(target=lambda: outcome.update(
        report=_train(layout, stage, layout.init_checkpoint())))  # fmt: skip
    trainer.start()
    deadline = time.time() + 300
    while time.time() < deadline and trainer.is_alive() and not _registered(root / "run" / "train",
                                                                            "S1.1"):  # fmt: skip
        time.sleep(0.05)
    removed = _registered(root / "run" / "train", "S1.1") and trainer.is_alive()
    if removed:
        cluster.remove_node(node, allow_graceful=False)  # the node is lost: SIGKILL
        cluster.add_node(num_cpus=1)  # its replacement joins
    trainer.join(timeout=600)
    metrics = outcome.get("report", {}).get("metrics", {})
    print(f"node-removed: {removed}")
    print(f"steps: {metrics.get('step')}")
    print(f"resumed-from: {metrics.get('resumed_from')}")
    falling = False
    if "report" in outcome:
        try:
            falling = bool(_losses(outcome["report"]))  # every step logged once, loss falling
        except AssertionError as error:
            print(f"losses: {error}")
    print(f"losses-falling: {falling}")
    ray.shutdown()
    cluster.shutdown()
    ok = removed and falling and metrics.get("step") == STEPS and (
        metrics.get("resumed_from") or 0) > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
