"""The web app's status names and terminal states (web/src/status.ts) are the platform's
(services/common/status.py): a state added or made terminal on one side fails here until the
other side says the same."""

from __future__ import annotations

import re
from pathlib import Path

from services.common.status import STATUS_NAMES, TERMINAL, status_name

STATUS_TS = Path(__file__).resolve().parents[2] / "web" / "src" / "status.ts"


def _ts_list(name: str) -> list[str]:
    """The string literals of `export const <name> = [...] as const;` in status.ts."""
    source = STATUS_TS.read_text()
    m = re.search(rf"export const {name} = \[([^\]]*)\] as const;", source)
    assert m, f"{STATUS_TS} has no `export const {name} = [...] as const;`"
    items = [item.strip() for item in m.group(1).split(",") if item.strip()]
    names = [re.fullmatch(r'"([A-Z_]+)"', item) for item in items]
    assert all(names), f"{name} in {STATUS_TS} must list only status name literals: {items}"
    return [n.group(1) for n in names if n]


def test_web_status_names_are_the_platform_ones():
    assert _ts_list("STATUSES") == STATUS_NAMES


def test_web_terminal_states_are_the_platform_ones():
    web = _ts_list("TERMINAL_STATUSES")
    assert len(web) == len(set(web))
    assert set(web) == {status_name(v) for v in TERMINAL}
