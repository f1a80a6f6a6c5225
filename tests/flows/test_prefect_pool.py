"""The lab's pattern: `evip deploy` to a Prefect work pool, a worker of the pool runs what is
triggered (a real server, a real process worker in its own folder, the flow found by module);
a campaign whose worker dies mid-training is rerun from the API and redoes nothing complete.
One test: a campaign on a pool costs minutes, and it shows both."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from flows.config import load_run_config
from flows.steps import run_steps, runnable
from tests.flows.test_prefect_serve import (  # noqa: F401 (the module's own Prefect server)
    DEPLOYMENTS,
    ROOT,
    _api,
    _free_port,
    finish,
    prefect_server,
)

DEMO = str(ROOT / "configs" / "demo.yaml")
SMALL_DEMO = [
    "synthetic_web.num_images=40", "synthetic_web.slow_seconds=1.0", "download.timeout=0.5",
    "model.tiny_llm.pretrain_steps=20",
    "teacher.tiny.train_steps=5", "teacher.generation.max_new_tokens=8", "evaluate.images=4",
    "evaluate.texts=4",
    "evaluate.max_new_tokens=8",
    # One stage (its data alone built), long enough in steps that a kill after its first
    # checkpoint lands mid-stage.
    "stages.stages=[{name: S1.1, text: alt_text, max_patches: 1280, samples_per_shard: 16}]",
    "train.stages=[{name: S1.1, trainable: [patch_embed, visual_ffn], steps: 6, global_batch: 2,"
    " max_packed_tokens: 1024, checkpoint_every: 2, milestones: 2}]",
]
"""The demo config made small: what the campaign does is the same, only less of it."""


def _records(folder: Path) -> dict[str, str]:
    """Completion records under `folder` -> their finish times (a redone unit gets a new one)."""
    return {str(p.relative_to(folder)): json.loads(p.read_text())["finished_at"] + p.read_text()
            for p in folder.rglob("_done/*.json")}  # fmt: skip


def _start_worker(env: dict, folder: Path, log: Path) -> subprocess.Popen:
    """`prefect worker start` of the pool `evip-pool`, in `folder` (not the checkout)."""
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "evip-pool"],
        cwd=folder, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _kill_machine(worker: subprocess.Popen) -> None:
    """What a lost worker machine does to its processes: the worker, the flow run it started (in
    a session of its own) and everything that started (the local Ray), SIGKILLed at once:
    descendants and whatever shares their sessions (daemons reparented away from the tree)."""
    if worker.poll() is not None:
        return
    tree = [worker.pid] + [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
    sessions = {_session(pid) for pid in tree} - {None, os.getsid(0)}
    doomed = set(tree) | {p.pid for p in psutil.process_iter() if _session(p.pid) in sessions}
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.wait()


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.mark.slow
def test_a_campaign_whose_worker_dies_mid_training_is_rerun_from_the_api_redoing_nothing(
        prefect_server, ray_local, tmp_path):  # noqa: F811
    """The demo campaign (small) deployed to a pool (every flow a deployment of it; a pool that
    does not exist is said, not a traceback); its worker, in a folder of its own, runs what is
    triggered, and its machine dies while S1.1 trains; a new worker and a second flow run of the
    deployment (the UI's Run button): complete steps are skipped, training resumes from its
    checkpoint, the weights equal an uninterrupted run's, and the report carries the probe and
    its lmms-eval numbers."""
    url, env = prefect_server
    env = {**env, "PREFECT_API_URL": url}
    run = tmp_path / "run"
    deploy = [sys.executable, "-m", "flows.cli", "deploy", "--config", DEMO,
              f"run_root={run}", f"synthetic_web.port={_free_port()}", *SMALL_DEMO]  # fmt: skip
    missing = subprocess.run([*deploy, "--pool", "no-such-pool"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "no-such-pool" in missing.stderr, missing.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "evip-pool",
                    "--type", "process"], env=env, check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    deployed = subprocess.run([*deploy, "--pool", "evip-pool"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    deployments = {d["name"]: d for d in _api(url, "/deployments/filter", {})}
    assert sorted(deployments) == sorted(DEPLOYMENTS)
    assert {d["work_pool_name"] for d in deployments.values()} == {"evip-pool"}
    campaign = deployments["campaign"]
    assert campaign["parameters"]["config"]["run_root"] == str(run)
    (tmp_path / "worker").mkdir()
    log = tmp_path / "worker.log"
    worker = _start_worker(env, tmp_path / "worker", log)

    def registered() -> bool:  # Ray Train has recorded a checkpoint of S1.1
        snapshots = list((run / "train").glob("S1.1-*/checkpoint_manager_snapshot.json"))
        return bool(snapshots) and "checkpoint_dir_name" in snapshots[0].read_text()

    try:
        first = _api(url, f"/deployments/{campaign['id']}/create_flow_run", {})
        deadline = time.time() + 600
        while time.time() < deadline and not registered():
            state = _api(url, f"/flow_runs/{first['id']}")["state"]["type"]
            assert state not in ("COMPLETED", "FAILED", "CRASHED"), log.read_text()[-3000:]
            time.sleep(0.1)
        _kill_machine(worker)
        assert registered(), "the campaign did not reach training"
        assert not (run / "checkpoints" / "S1.1" / "final").exists()  # killed mid-stage
        before = _records(run)
        done_before = {k for k in before if not k.startswith(("checkpoints/S1.1", "reports"))}

        worker = _start_worker(env, tmp_path / "worker", log)
        second = _api(url, f"/deployments/{campaign['id']}/create_flow_run", {})
        finish(url, second["id"], log, timeout=600)
    finally:
        _kill_machine(worker)
    after = _records(run)
    assert {k: after[k] for k in done_before} == {k: before[k] for k in done_before}  # not redone
    metrics = [json.loads(line) for line in
               (run / "reports/train/S1.1/metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert metrics[-1]["resumed_from"] > 0  # training went on from its checkpoint
    report = (run / "reports" / "campaign.md").read_text()
    assert "## train" in report and "## evaluate" in report and "caption_accuracy: init" in report
    assert (run / "reports/eval/milestones.png").exists()
    assert (run / "reports" / "ingest-synthetic.png").exists()
    # Each step's report an artifact; its progress published while it ran, final at the end.
    artifacts = _api(url, "/artifacts/filter", {})
    assert {"ingest-synthetic", "recaption-synthetic", "stages-run", "train-s1-1",
            "evaluate-run"} <= {a["key"] for a in artifacts}  # fmt: skip
    ingest = next(a for a in artifacts if a["key"] == "ingest-synthetic")
    assert "| kept |" in ingest["data"]
    rerun = {a["key"]: a for a in artifacts if a["flow_run_id"] == second["id"]}
    assert "caption_accuracy: init" in rerun["evaluate-run"]["data"]
    assert {"download-synthetic-progress", "recaption-synthetic-progress",
            "evaluate-run-progress"} <= set(rerun)  # fmt: skip
    trained = rerun["train-s1-1-progress"]
    assert trained["data"] == 100.0 and "train S1.1: step 6 / 6, loss" in trained["description"]
    assert "train-S1.1" in {t["name"] for t in _api(url, "/task_runs/filter", {})}
    # The demo's harness (lmms-eval) numbers join the report per stage, equal to the probe's own.
    assert "### benchmarks (lmms-eval)" in report and (run / "reports/eval/benchmarks.png").exists()
    for stage in ("init", "S1.1"):
        probe = json.loads((run / f"reports/eval/{stage}@probe.json").read_text())
        harness = json.loads((run / f"reports/eval/{stage}@evip_probe.json").read_text())
        assert harness["evip_probe_caption"]["caption_accuracy"] == pytest.approx(
            probe["caption_accuracy"])

    # The reference: the same steps' outputs, training run once, uninterrupted.
    reference = tmp_path / "reference"
    trained = {run / "train", run / "checkpoints" / "S1.1", run / "reports"}
    shutil.copytree(run, reference, ignore=lambda folder, names: [
        n for n in names if Path(folder, n) in trained])  # fmt: skip
    (reference / "checkpoints/_done/S1.1.json").unlink()
    # In this process, on the session's Ray: the same driver as `evip train`, without a second
    # interpreter and Ray to start.
    run_steps(load_run_config(DEMO, [f"run_root={reference}", *SMALL_DEMO]), runnable("train"))
    a = load_file(run / "checkpoints/S1.1/final/model.safetensors")
    b = load_file(reference / "checkpoints/S1.1/final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
