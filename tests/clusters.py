"""A Ray cluster of several nodes on one machine, for the scenarios that lose a node on purpose."""

from __future__ import annotations

from ray.cluster_utils import Cluster


def node_losing_cluster(head_cpus: int) -> Cluster:
    """A head with `head_cpus` CPUs that notices a lost node in about a second, not after Ray's
    default ~30 s of missed health checks."""
    fast = {"health_check_period_ms": 500, "health_check_failure_threshold": 2}
    return Cluster(initialize_head=True,
                   head_node_args={"num_cpus": head_cpus, "_system_config": fast})
