"""What a download achieved: final status per sample, failures by reason, retryable or not."""

from __future__ import annotations

import re

import pyarrow as pa

from pipelines.markdown import table

# (reason, pattern on img2dataset's error message, whether a later attempt may succeed)
FAILURE_REASONS = (
    ("timeout", r"timed out|timeout", True),
    ("http_5xx", r"HTTP Error 5\d\d", True),
    ("connection", r"Connection (reset|refused|aborted)|Remote end closed", True),
    ("http_404", r"HTTP Error 404", False),
    ("http_4xx", r"HTTP Error 4\d\d", False),
    ("redirect_loop", r"HTTP Error 30\d|redirect", False),
    ("opted_out", r"X-Robots-Tag", False),
    ("not_an_image", r"decoding", False),
    ("too_large", r"area too large", False),
)


def failure_reason(message: str | None) -> str:
    """img2dataset's free-text error -> a short reason (`other` when none matches)."""
    for reason, pattern, _ in FAILURE_REASONS:
        if message and re.search(pattern, message, flags=re.IGNORECASE):
            return reason
    return "other"


def is_retryable(message: str | None) -> bool:
    """Whether the failure is transient (timeouts, 5xx, dropped connections)."""
    reason = failure_reason(message)
    return any(r == reason and retry for r, _, retry in FAILURE_REASONS)


def download_summary(latest: pa.Table) -> dict:
    """Counts over each sample's final attempt: total, downloaded, rate, failures by reason."""
    failures: dict[str, int] = {}
    success = 0
    for status, message in zip(latest["status"].to_pylist(), latest["error_message"].to_pylist()):
        if status == "success":
            success += 1
        else:
            reason = failure_reason(message)
            failures[reason] = failures.get(reason, 0) + 1
    total = latest.num_rows
    rate = success / total if total else 0.0
    return {"total": total, "downloaded": success, "success_rate": rate, "failures": failures}


def summary_table(summary: dict) -> str:
    """Markdown table of a download summary."""
    downloaded = f"{summary['downloaded']} ({summary['success_rate']:.1%})"
    rows = [["total", summary["total"]], ["downloaded", downloaded]]
    rows += [[f"failed: {reason}", n] for reason, n in sorted(summary["failures"].items())]
    return table(["", "samples"], rows, "lr")
