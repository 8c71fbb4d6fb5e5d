"""The web viewers' CT window presets (web/src/windowing.ts, CT_PRESETS) are the `window`
operation's (services/processor/imaging/intensity.py, WINDOW_PRESETS): a preset added or changed on
one side fails here until the other side says the same."""

from __future__ import annotations

import re
from pathlib import Path

from services.processor.imaging.intensity import WINDOW_PRESETS

WINDOWING_TS = Path(__file__).resolve().parents[2] / "web" / "src" / "windowing.ts"
_ENTRY = re.compile(r'\[\s*"([a-z_]+)"\s*,\s*"[^"]*"\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]')


def _web_presets() -> list[tuple[str, float, float]]:
    source = WINDOWING_TS.read_text()
    m = re.search(r"export const CT_PRESETS[^=]*= \[(.*?)\n\];", source, re.S)
    assert m, f"{WINDOWING_TS} has no `export const CT_PRESETS ... = [...];`"
    entries = [line.strip().rstrip(",") for line in m.group(1).splitlines() if line.strip()]
    parsed = [_ENTRY.fullmatch(entry) for entry in entries]
    assert all(parsed), f"CT_PRESETS must list only [id, label, center, width] literals: {entries}"
    return [(p.group(1), float(p.group(2)), float(p.group(3))) for p in parsed if p]


def test_web_ct_presets_are_the_window_operations() -> None:
    assert _web_presets() == [(name, c, w) for name, (c, w) in WINDOW_PRESETS.items()]
