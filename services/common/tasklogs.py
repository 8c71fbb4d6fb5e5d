"""Task log lines: what a processor noted about one task, returned with the task (`logs`).

The processor writes them and the jobs service cleans them again before storing (events are
untrusted input), both with `clean_logs`: plain text (no control or bidirectional-override
characters), no absolute paths (a path is reduced to its base name), at most MAX_LOG_LINES lines of
at most MAX_LOG_LINE_CHARS characters each.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_LOG_LINES = 50
MAX_LOG_LINE_CHARS = 300
# Bidirectional overrides and isolates: they can make a text read differently from what it is.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# An absolute path of two segments or more ("/tmp/task-x/in.dcm", "C:\\data\\in.dcm"); a lone
# "/" in a text ("1/2", "and/or") has no path before it and stays.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\-])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]*)")


def plain_text(text: str, limit: int) -> str:
    """`text` without control or bidi-override characters (line breaks and tabs become spaces), at
    most `limit` characters."""
    cleaned = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI)
    ).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def without_paths(text: str) -> str:
    """Absolute paths in `text` reduced to their base names: a server's folders are nobody's business."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", text)


def clean_logs(lines: Iterable[str]) -> list[str]:
    """Bounded plain log lines; empty lines dropped. Past MAX_LOG_LINES, the last line says how
    many were left out."""
    cleaned = [line for line in (plain_text(without_paths(str(raw)), MAX_LOG_LINE_CHARS) for raw in lines)
               if line]
    if len(cleaned) <= MAX_LOG_LINES:
        return cleaned
    left_out = len(cleaned) - (MAX_LOG_LINES - 1)
    return [*cleaned[: MAX_LOG_LINES - 1], f"({left_out} more lines left out)"]
