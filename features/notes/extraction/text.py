"""Scanning helpers shared by the extractors.

Speed: most whole-text patterns run on an ASCII-lowercased copy of the text (same length, so
offsets carry over) without `re.IGNORECASE` and without a leading `\\b`. Both would stop `re`
from skipping ahead by the pattern's first characters and make every scan several times slower.
The word boundary is checked in `scan` instead.
"""

import re
from collections.abc import Callable, Iterator
from string import ascii_lowercase, ascii_uppercase

_ASCII_LOWER = str.maketrans(ascii_uppercase, ascii_lowercase)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def lowered(text: str) -> str:
    """Lower-case text with the same length, so offsets into it are offsets into `text`."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def word_start(low: str, index: int) -> bool:
    return index == 0 or not (low[index - 1].isalnum() or low[index - 1] == "_")


def number_start(low: str, index: int) -> bool:
    return index == 0 or low[index - 1] not in "0123456789./"


def scan(
    pattern: re.Pattern[str],
    low: str,
    start: int = 0,
    end: int | None = None,
    accept: Callable[[str, int], bool] = word_start,
) -> Iterator[re.Match[str]]:
    """Matches of `pattern` in low[start:end] whose start passes `accept` (a leading \\b)."""
    end = len(low) if end is None else end
    position = start
    while position <= end:
        match = pattern.search(low, position, end)
        if match is None:
            return
        if accept(low, match.start()):
            yield match
            position = max(match.end(), match.start() + 1)
        else:
            position = match.start() + 1


def any_match(patterns: tuple[re.Pattern[str], ...], low: str, start: int, end: int) -> bool:
    return any(next(scan(pattern, low, start, end), None) for pattern in patterns)


def lines(text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of every line of text[start:end], without the break; CR, LF, CRLF."""
    end = len(text) if end is None else end
    position = start
    for brk in _LINE_BREAK.finditer(text, start, end):
        yield position, brk.start()
        position = brk.end()
    if position < end:
        yield position, end


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def dedup(items: list, key: Callable) -> list:
    """The first item of each key, in order; items with an empty key are dropped."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k and k not in seen:
            seen.add(k)
            kept.append(item)
    return kept
