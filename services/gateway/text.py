"""Small checks on text from clients."""

from __future__ import annotations


def ascii_digits(text: str) -> bool:
    """True for "0".."9" only: str.isdigit() also accepts "²" and other digits int() refuses."""
    return text.isascii() and text.isdigit()
