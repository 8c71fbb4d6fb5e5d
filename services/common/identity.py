"""The user-id and idempotency-key rules, enforced alike by the gateway (headers, file URLs) and the
jobs service."""

from __future__ import annotations

import re

# A user id is a storage key segment (services/common/keys.py), so never "." or "..". The web app
# checks the same pattern before asking (web/src/api.ts, compared by tests/web/test_identity_rules.py).
USER_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ @ -, not '.' or '..'"
USER_ID_PATTERN = "^[A-Za-z0-9._@-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)


def is_valid_user_id(value: str) -> bool:
    """True when `value` follows USER_ID_RULE."""
    return bool(_USER_ID.fullmatch(value)) and value not in (".", "..")


# A client's Idempotency-Key (POST /jobs): enough for a UUID, a ULID or "order-42:retry-safe".
IDEMPOTENCY_KEY_RULE = "1-128 characters of A-Z a-z 0-9 . _ : -"
IDEMPOTENCY_KEY_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"  # as the OpenAPI document states it
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def is_valid_idempotency_key(value: str) -> bool:
    return bool(_IDEMPOTENCY_KEY.fullmatch(value))
