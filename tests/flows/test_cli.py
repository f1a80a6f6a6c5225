"""The `evip` command line: help, config errors with field paths, `evip run` on a fresh Prefect
home (the demo end to end, killed and rerun: `test_prefect_pool.py`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


STUBBED_CAMPAIGN = """
import sys
import flows.cli as cli

run = cli._run


def stubbed(command, config):  # the campaign flow itself, its steps' work left out
    import flows.campaign

    evaluated = {"chance": 0.4, "stages": {"init": {"caption_accuracy": 0.25},
                                           "S1.1": {"caption_accuracy": 0.5}}}
    flows.campaign.run_commands = lambda config, commands: {"evaluate": evaluated}
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
    assert "caption_accuracy: init 0.250 S1.1 0.500" in result.stdout  # the line the demo ends on


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
