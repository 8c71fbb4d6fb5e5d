"""The user-id and idempotency-key rules (services/common/identity.py), one table each. The key rule
is compiled from the pattern the OpenAPI document states (tests/gateway/test_gateway_schemas.py)."""

from __future__ import annotations

import pytest

from services.common.identity import is_valid_idempotency_key, is_valid_user_id

# (user id, valid): a storage key segment, so never "." or "..".
USER_IDS = [
    ("alice", True), ("a", True), ("bob@example.org", True), ("x" * 64, True), ("a.b_c-d", True),
    ("", False), (".", False), ("..", False), ("x" * 65, False), ("a/b", False), ("a b", False),
    ("al\u00efce", False), ("alice\n", False), ("a:b", False),
]

# (key, valid): enough for a UUID, a ULID or "order-42:retry-safe".
IDEMPOTENCY_KEYS = [
    ("0b8a4f4e-8d0b-4d6e-9a53-2f6f0d1c9e11", True), ("01HZX3K7Q8", True), ("order-42:retry-safe", True),
    ("k" * 128, True), ("a.b_c", True),
    ("", False), ("k" * 129, False), ("a b", False), ("a/b", False), ("key\n", False), ("cl\u00e9", False),
]


@pytest.mark.parametrize(("user_id", "valid"), USER_IDS)
def test_user_id_rule(user_id: str, valid: bool) -> None:
    assert is_valid_user_id(user_id) is valid


@pytest.mark.parametrize(("key", "valid"), IDEMPOTENCY_KEYS)
def test_idempotency_key_rule(key: str, valid: bool) -> None:
    assert is_valid_idempotency_key(key) is valid

