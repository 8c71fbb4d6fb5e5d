"""The web app checks a user id before asking (web/src/api.ts, validUserId) with the platform's rule
(services/common/identity.py): a change on one side fails here until the other side says the same."""

from __future__ import annotations

import re
from pathlib import Path

from services.common.identity import USER_ID_PATTERN

API_TS = Path(__file__).resolve().parents[2] / "web" / "src" / "api.ts"


def test_web_user_id_rule_is_the_platforms() -> None:
    source = API_TS.read_text()
    m = re.search(r"^const USER_ID_RE = /(.*)/;$", source, re.M)
    assert m, f"{API_TS} has no `const USER_ID_RE = /.../;`"
    assert m.group(1) == USER_ID_PATTERN
    body = re.search(r"export function validUserId\(id: string\): boolean \{\n(.*?)\n\}", source, re.S)
    assert body, f"{API_TS} has no validUserId"
    # "." and ".." are refused too (a user id is a storage key segment).
    assert body.group(1).strip() == 'return USER_ID_RE.test(id) && id !== "." && id !== "..";'
