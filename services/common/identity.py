"""The user-id rule, enforced alike by the gateway (header, file URLs) and the jobs service."""

from __future__ import annotations

import re

_USER_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def is_valid_user_id(value: str) -> bool:
    """1-64 characters of A-Z a-z 0-9 . _ @ -, and not "." or ".." (it is a storage key segment)."""
    return bool(_USER_ID.fullmatch(value)) and value not in (".", "..")
