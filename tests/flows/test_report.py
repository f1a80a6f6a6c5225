"""Reports: tables people read and the ingest figure people look at."""

from __future__ import annotations

from flows.report import ingest_figure, parameter_table
from model.param_groups import count_parameters
from tests.conftest import tiny_model


def test_ingest_figure_is_written(tmp_path):
    report = {
        "source": "laion",
        "downloaded": {"downloaded": 90, "failures": {"http_404": 7}},
        "filtered": {"total": 97, "kept": 80, "too_small": 10, "download_http_404": 7},
    }
    path = ingest_figure(report, tmp_path / "reports" / "ingest-laion.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_parameter_table_lists_groups_and_totals():
    table = parameter_table(count_parameters(tiny_model()))
    assert "| visual_ffn |" in table and "| active per visual token |" in table
