"""Scale-out: teacher actors on both nodes of a two-node cluster; losing a teacher actor, then a
whole node, mid-job is survived, every sample captioned exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_two_node_cluster_survives_losing_a_teacher_then_a_node_exactly_once():
    result = subprocess.run([sys.executable, "-m", "tests.recaption.cluster_scenario"], cwd=ROOT,
                            capture_output=True, text=True, timeout=480)  # fmt: skip
    assert "nodes-with-teachers: 2" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    assert "actor-killed: True" in result.stdout and "node-removed: True" in result.stdout
    assert "exactly-once: True" in result.stdout
    assert result.returncode == 0
