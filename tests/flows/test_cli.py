"""The `evip` command line: help, config errors with field paths, and the demo end to end."""

from __future__ import annotations

import os
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
    for command in ("config", "ingest", "recaption", "stages", "run", "serve", "model-info",
                    "status", "trace", "convert"):
        assert command in out


def test_bad_override_exits_2_with_the_field_path(capsys):
    code = main(
        ["config", "--config", str(ROOT / "configs/demo.yaml"), "model.vision.tile_size=450"]
    )
    assert code == 2
    assert "model.vision: Value error, tile_size (450)" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end_as_a_user_runs_it(tmp_path):
    """`evip run`: the campaign flow on Prefect's local (temporary) server."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", "configs/demo.yaml",
         f"run_root={tmp_path}", "synthetic_web.port=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    output = result.stdout + result.stderr  # Prefect logs the flow's prints to stderr
    assert result.returncode == 0, output[-3000:]
    assert "Flow run" in output and "Finished in state Completed()" in output
    assert "reload exact: True" in output and "round trip exact: True" in output
    assert "| visual_ffn |" in output and "## recaption synthetic" in output
    assert (tmp_path / "checkpoints/init/model.safetensors").exists()
    assert (tmp_path / "checkpoints/init-official/config.json").exists()
    assert (tmp_path / "run_config.yaml").exists()
    assert "## stages" in output and "| S1.3 |" in output
    for stage in ("S1.1", "S1.2", "S1.3"):
        assert (tmp_path / "stages" / stage / "shard-000000.tar").exists()

    converted = tmp_path / "back"
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "convert", "from-official",
         str(tmp_path / "checkpoints/init-official"), str(converted)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (converted / "config.json").exists()


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
