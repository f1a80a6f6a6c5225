"""Failure reasons from img2dataset's messages, and which of them a repair pass retries."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipelines.download_report import download_summary, failure_reason, is_retryable
from pipelines.repair import retry_rows


@pytest.mark.parametrize(
    ("message", "reason", "retry"),
    [
        ("<urlopen error timed out>", "timeout", True),
        ("timed out", "timeout", True),
        ("HTTP Error 503: Service Unavailable", "http_5xx", True),
        ("HTTP Error 404: Not Found", "http_404", False),
        ("HTTP Error 302: The HTTP server returned a redirect error", "redirect_loop", False),
        ("Use of image disallowed by X-Robots-Tag directives", "opted_out", False),
        ("Image decoding error", "not_an_image", False),
        ("image area too large", "too_large", False),
        ("something new", "other", False),
    ],
)
def test_reasons(message, reason, retry):
    assert failure_reason(message) == reason
    assert is_retryable(message) is retry


def test_summary_counts_final_attempts():
    latest = pa.table(
        {
            "status": ["success", "success", "failed_to_download", "failed_to_resize"],
            "error_message": [None, None, "timed out", "Image decoding error"],
        }
    )
    assert download_summary(latest) == {
        "total": 4, "downloaded": 2, "success_rate": 0.5,
        "failures": {"timeout": 1, "not_an_image": 1},
    }  # fmt: skip


def test_retries_are_planned_in_key_order_whatever_order_the_threads_finished():
    """Two runs whose threads finished in different orders repair the same samples under the
    same keys (the repair shard numbers them in this order)."""
    finished = pa.table({"key": ["0000003", "0000000", "0000002", "0000001"],
                         "status": ["failed_to_download", "failed_to_download", "success",
                                    "failed_to_download"],
                         "error_message": ["HTTP Error 503: Service Unavailable", "timed out",
                                           None, "HTTP Error 404: Not Found"],
                         "url": ["u3", "u0", "u2", "u1"], "sample_id": ["s3", "s0", "s2", "s1"]})
    rows = retry_rows(finished)
    assert rows.column_names == ["url", "sample_id"]  # the plan's columns, no attempt's
    assert rows["url"].to_pylist() == ["u0", "u3"]  # 404 is final, success is done
    assert retry_rows(finished.take([3, 1, 0, 2])).equals(rows)
