"""The `evip` command line: help, config errors with field paths, and the demo end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from flows.cli import main

ROOT = Path(__file__).parents[2]


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "ingest", "recaption", "stages", "run", "serve", "deploy",
                    "model-info", "status", "trace", "convert"):
        assert command in out


def test_bad_override_exits_2_with_the_field_path(capsys):
    code = main(
        ["config", "--config", str(ROOT / "configs/demo.yaml"), "model.vision.tile_size=450"]
    )
    assert code == 2
    assert "model.vision: Value error, tile_size (450)" in capsys.readouterr().err


SMALL_DEMO = [
    "synthetic_web.num_images=40", "model.tiny_llm.pretrain_steps=20",
    "teacher.tiny.train_steps=5", "evaluate.images=4", "evaluate.texts=4",
    "evaluate.max_new_tokens=8",
    # One stage, long enough in steps that a kill after its first checkpoint lands mid-stage.
    "train.stages=[{name: S1.1, trainable: [patch_embed, visual_ffn], steps: 14, global_batch: 2,"
    " max_packed_tokens: 1024, checkpoint_every: 2, milestones: 2}]",
]
"""The demo config made small: what `evip run` does is the same, only less of it."""


def _records(folder: Path) -> dict[str, str]:
    """Completion records under `folder` -> their finish times (a redone unit gets a new one)."""
    return {str(p.relative_to(folder)): json.loads(p.read_text())["finished_at"] + p.read_text()
            for p in folder.rglob("_done/*.json")}  # fmt: skip


@pytest.mark.slow
def test_a_campaign_killed_during_training_finishes_on_rerun_without_redoing_work(tmp_path):
    """`evip run` (the campaign flow on Prefect's local server) SIGKILLed while it trains, then
    run again: complete steps are skipped, training resumes, the weights equal a clean run's."""
    run = tmp_path / "run"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.cli", "run", "--config", "configs/demo.yaml",
               f"run_root={run}", f"synthetic_web.port={_free_port()}", *SMALL_DEMO]  # fmt: skip
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 600

    def registered() -> bool:  # Ray Train has recorded a checkpoint of S1.1
        snapshots = list((run / "train").glob("S1.1-*/checkpoint_manager_snapshot.json"))
        return bool(snapshots) and "checkpoint_dir_name" in snapshots[0].read_text()

    while time.time() < deadline and first.poll() is None and not registered():
        time.sleep(0.05)
    assert first.poll() is None, f"the campaign ended (exit {first.returncode}) before training"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert registered(), "the campaign did not reach training"
    assert not (run / "checkpoints" / "S1.1" / "final").exists()  # killed mid-stage
    before = _records(run)
    done_before = {k for k in before if not k.startswith(("checkpoints/S1.1", "reports"))}

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env=env)  # fmt: skip
    output = result.stdout + result.stderr  # Prefect logs the flow's prints to stderr
    assert result.returncode == 0, output[-3000:]
    after = _records(run)
    assert {k: after[k] for k in done_before} == {k: before[k] for k in done_before}  # not redone
    metrics = [json.loads(line) for line in
               (run / "reports/train/S1.1/metrics.jsonl").read_text().splitlines()]  # fmt: skip
    assert metrics[-1]["resumed_from"] > 0  # training went on from its checkpoint
    assert "## train" in output and "## evaluate" in output and "caption_accuracy: init" in output
    assert (run / "reports/eval/milestones.png").exists()

    # The reference: the same steps' outputs, training run once, uninterrupted.
    reference = tmp_path / "reference"
    trained = {run / "train", run / "checkpoints" / "S1.1", run / "reports"}
    shutil.copytree(run, reference, ignore=lambda folder, names: [
        n for n in names if Path(folder, n) in trained])  # fmt: skip
    (reference / "checkpoints/_done/S1.1.json").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", "--config", "configs/demo.yaml",
         f"run_root={reference}", *SMALL_DEMO], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    a = load_file(run / "checkpoints/S1.1/final/model.safetensors")
    b = load_file(reference / "checkpoints/S1.1/final/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    converted = tmp_path / "back"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "convert", "from-official",
         str(run / "checkpoints/S1.1/final/official"), str(converted)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (converted / "config.json").exists()


STUBBED_CAMPAIGN = """
import sys
import flows.cli as cli

run = cli._run


def stubbed(command, config):  # the campaign flow itself, its steps left out
    import flows.campaign

    flows.campaign.run_commands = lambda config, commands: {}
    run(command, config)


cli._run = stubbed
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_evip_run_starts_prefect_on_a_fresh_home_while_the_cpu_is_busy(tmp_path):
    """A first `evip run` creates Prefect's database; with every core busy that outlasted
    Prefect's 20 s start-up limit for its local server ('Timed out while attempting to connect
    to ephemeral Prefect API server')."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    for name in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        env.pop(name, None)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-c", STUBBED_CAMPAIGN, "run", "--config", "configs/demo.yaml",
             f"run_root={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=400,
        )  # fmt: skip
    finally:
        for process in busy:
            process.kill()
            process.wait()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "creates its database" in output and "Finished in state Completed" in output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_malformed_source_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "bad.parquet").write_text("url,caption\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"run_root: {tmp_path}/run\nsources: [{{name: bad, paths: ['{tmp_path}/bad.parquet']}}]\n"
    )
    assert main(["ingest", "--config", str(config)]) == 2
    assert "bad.parquet is not a parquet file" in capsys.readouterr().err
    assert not (tmp_path / "run" / "raw").exists()


def test_config_keys_lists_every_setting_with_its_meaning(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "model.vision.tile_size = 448  # Side of one square tile in pixels" in out
    assert "download.max_in_flight = 4  # Shard tasks running at once." in out
    assert "teacher.generation.max_new_tokens = 48" in out
