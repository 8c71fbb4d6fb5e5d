"""The key validator shared by every backend."""

from __future__ import annotations

import pytest

from services.storage.backends import InvalidKey, validate_key, validate_prefix

HOSTILE_KEYS = {
    "../x": "'..'",
    "a/../../etc/passwd": "'..'",
    "..": "'..'",
    "a/./b": "'.'",
    "/abs": "start with '/'",
    "a//b": "empty segment",
    "a/b/": "empty segment",
    "a\\b": "backslash",
    "a\x00b": "NUL",
    "a\nb": "control",
    "a\x7fb": "control",
    "": "empty",
    "x" * 1025: "limit is 1024",
}


@pytest.mark.parametrize("key", list(HOSTILE_KEYS), ids=repr)
def test_hostile_keys_are_rejected_with_a_reason(key: str) -> None:
    with pytest.raises(InvalidKey, match=HOSTILE_KEYS[key]):
        validate_key(key)


@pytest.mark.parametrize("key", ["alice/job-1/scan.dcm", "a", "u@x.org/j/.hidden", "ü/ñ/ct 1.nii.gz",
                                 "a/..b/c.", "x" * 1024])
def test_platform_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key


def test_multibyte_length_is_counted_in_bytes() -> None:
    with pytest.raises(InvalidKey, match="1026 bytes"):
        validate_key("é" * 513)


@pytest.mark.parametrize("prefix", ["alice/job1", "", "/", "../", "a//", "/a/"])
def test_bad_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(InvalidKey):
        validate_prefix(prefix)


def test_prefix_ending_with_slash_is_accepted() -> None:
    assert validate_prefix("alice/job1/") == "alice/job1/"
