"""Small text helpers: an example corpus for the code-retrieval probe."""

from __future__ import annotations


def count_vowels(text: str) -> int:
    """How many vowels ``text`` holds, upper or lower case."""
    vowels = set("aeiouAEIOU")
    return sum(1 for char in text if char in vowels)


def title_case_words(text: str) -> str:
    """``text`` with the first letter of every word in upper case."""
    pieces = [word[:1].upper() + word[1:] for word in text.split(" ")]
    return " ".join(pieces)


def collapse_spaces(text: str) -> str:
    """Runs of whitespace in ``text`` replaced by one space, ends trimmed."""
    parts = text.split()
    return " ".join(parts)


def is_palindrome(text: str) -> bool:
    """Whether ``text`` reads the same both ways, ignoring case and non-letters."""
    letters = [char.lower() for char in text if char.isalnum()]
    return letters == letters[::-1]


def caesar_shift(text: str, shift: int) -> str:
    """``text`` with each ASCII letter moved ``shift`` places along the alphabet."""
    shifted = []
    for char in text:
        if char.isascii() and char.isalpha():
            base = ord("A") if char.isupper() else ord("a")
            shifted.append(chr((ord(char) - base + shift) % 26 + base))
        else:
            shifted.append(char)
    return "".join(shifted)


def word_frequencies(text: str) -> dict[str, int]:
    """How often each lower-cased word occurs in ``text``."""
    counts: dict[str, int] = {}
    for word in text.lower().split():
        cleaned = word.strip(".,;:!?\"'()")
        if cleaned:
            counts[cleaned] = counts.get(cleaned, 0) + 1
    return counts


def truncate_with_ellipsis(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    keep = max(limit - 3, 0)
    return text[:keep].rstrip() + "..."
