"""The lab's pattern: `evip deploy` to a Prefect work pool, a worker of the pool runs what is
triggered (a real server, a real process worker in its own folder, the flow found by module)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.flows.test_prefect_serve import (  # noqa: F401 (the module's own Prefect server)
    DEPLOYMENTS,
    ROOT,
    _api,
    finish,
    prefect_server,
)


@pytest.mark.slow
def test_flows_deployed_to_a_work_pool_run_on_its_worker(prefect_server, tmp_path):  # noqa: F811
    url, env = prefect_server
    env = {**env, "PREFECT_API_URL": url}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"run_root": str(tmp_path / "run")}))
    deploy = [sys.executable, "-m", "flows.cli", "deploy", "--config", str(tmp_path / "run.yaml")]

    missing = subprocess.run([*deploy, "--pool", "no-such-pool"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "no-such-pool" in missing.stderr  # said, not a traceback

    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "evip-pool",
                    "--type", "process"], env=env, check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    done = subprocess.run([*deploy, "--pool", "evip-pool"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
    assert sorted(deployments) == sorted(DEPLOYMENTS)
    assert {d["work_pool_name"] for d in deployments.values()} == {"evip-pool"}
    assert deployments["campaign"]["parameters"]["config"]["run_root"] == str(tmp_path / "run")

    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "evip-pool"],
        cwd=tmp_path, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        run = _api(url, f"/deployments/{deployments['evaluate']['id']}/create_flow_run", {})
        finish(url, run["id"], log_path, timeout=300)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    report = (tmp_path / "run" / "reports" / "evaluate.md").read_text()
    assert "skipped: no evaluate.probe configured" in report  # the flow ran, on the worker
