"""Task log lines are plain, bounded and name no server path."""

from __future__ import annotations

import pytest

from services.common.tasklogs import MAX_LOG_LINE_CHARS, MAX_LOG_LINES, clean_logs, without_paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cannot read /tmp/task-abc/input/scan.dcm: truncated", "cannot read scan.dcm: truncated"),
        ("at /srv/radiology/var/objects/alice/", "at …"),
        (r"C:\data\in\scan.dcm broken", "scan.dcm broken"),
        ("ratio 1/2, and/or 3/4 of the slices", "ratio 1/2, and/or 3/4 of the slices"),
        ("decode: 0.012 s", "decode: 0.012 s"),
    ],
)
def test_absolute_paths_become_base_names(text: str, expected: str) -> None:
    assert without_paths(text) == expected


def test_lines_are_plain_and_bounded() -> None:
    lines = clean_logs(["ok\x1b[2J\u202eevil\nnext", "", "   ", "x" * 1000])
    assert lines[0] == "ok[2Jevil next"
    assert len(lines) == 2 and len(lines[1]) == MAX_LOG_LINE_CHARS and lines[1].endswith("…")


def test_too_many_lines_say_how_many_were_left_out() -> None:
    lines = clean_logs(f"line {i}" for i in range(120))
    assert len(lines) == MAX_LOG_LINES
    assert lines[-2] == f"line {MAX_LOG_LINES - 2}"
    assert lines[-1] == f"({120 - MAX_LOG_LINES + 1} more lines left out)"
