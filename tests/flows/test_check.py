"""`evip check`: the paper's campaign, as shipped, checked offline at full size; a stage that does
not fit and a source without its preset's columns are refused, naming what to change."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.check import CheckFailed, check_markdown
from flows.cli import main
from flows.config import load_run_config
from pipelines.sources import SourceError

PAPER = "configs/mono-internvl-2b.yaml"


def test_the_paper_config_passes_as_shipped(capsys):
    assert main(["check", "--config", PAPER]) == 0
    out = capsys.readouterr().out
    assert "every stage fits" in out
    assert "| S1.1 | 1.23B / 3.12B | 300,000 | 921.60M |" in out  # the paper's 922M samples
    assert "no files yet at ['/data/laion2B-en-joined/*.parquet']" in out


def test_a_stage_that_cannot_fit_is_refused_with_the_fields_to_change(capsys):
    tight = ["train.gpu_memory_gib=24", "train.stages.3.activation_checkpointing=none"]
    with pytest.raises(CheckFailed, match=r"train\.stages\.3 \(S2\) needs .* GiB per GPU") as err:
        check_markdown(load_run_config(PAPER, tight))
    assert "train.stages.3.activation_checkpointing=full" in str(err.value)
    assert main(["check", "--config", PAPER, *tight]) == 1
    assert "does not fit" in capsys.readouterr().err


def test_checkpointing_and_zero_3_are_what_make_a_stage_fit():
    full = check_markdown(load_run_config(PAPER, ["train.gpu_memory_gib=24"]))
    assert "| S2 |" in full and "**no**" not in full


def test_a_source_without_its_presets_columns_is_refused(tmp_path):
    pq.write_table(pa.table({"URL": ["http://127.0.0.1/a.jpg"], "TEXT": ["a"]}),
                   tmp_path / "part-0.parquet")  # fmt: skip
    config = load_run_config(PAPER, [f"sources.0.paths=[{tmp_path}/*.parquet]"])
    with pytest.raises(SourceError, match="lacks columns"):
        check_markdown(config)


def test_float32_weights_are_planned_as_they_train_in_float32():
    """precision auto keeps a float32 build float32 on GPUs (bf16 would round its frozen path),
    so the plan counts 4-byte weights and activations; named bf16 is planned as bf16."""

    def s11(overrides):  # precision and needed GiB of S1.1's row
        row = next(line for line in check_markdown(load_run_config(PAPER, overrides)).splitlines()
                   if line.startswith("| S1.1 |"))  # fmt: skip
        cells = [cell.strip() for cell in row.split("|")]
        return cells[9], float(cells[10])

    auto = ["train.stages.0.precision=auto"]  # the paper's config names bf16
    bf16, fp32 = s11(auto), s11([*auto, "model.dtype=float32"])
    assert bf16[0] == "bf16" and fp32[0] == "fp32" and fp32[1] > 1.5 * bf16[1]
    assert s11(["model.dtype=float32"]) == bf16
