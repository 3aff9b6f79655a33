"""Allergies: allergy sections, "allergic to ..." clauses and "<substance> allergy"."""

import re

from .drug_names import ALLERGENS
from .results import Allergy, Section, Span
from .text import any_match, dedup, scan, trimmed

_NO_KNOWN_ALLERGIES = tuple(
    re.compile(phrase + r"\b")
    for phrase in (
        "nkda",
        "nka",
        r"no\s+known\s+(?:drug\s+|medication\s+)?allergies",
        r"no\s+(?:drug\s+|medication\s+)?allergies",
        r"denies\s+(?:any\s+)?(?:drug\s+)?allergies",
        r"allergies\s*:\s*(?:none|nil|no known)",
    )
)
_NONE = re.compile(r"\s*(?:none|nil|no)\.?\s*", re.I)
_ALLERGY_CUES = tuple(
    re.compile(phrase + r"\s*")
    for phrase in (r"allerg(?:ic|y|ies)\s+to", r"allergies\s*:", r"sensitivity\s+to",
                   r"intolerant\s+to")
)  # fmt: skip
_ALLERGY_WORD = re.compile(r"allerg(?:y|ies)\b")
_ALLERGEN_BEFORE = re.compile(r"(?<![a-z-])(?P<s>[a-z][a-z-]+(?:\s+drugs)?)\s+$")
_ALLERGY_SEPARATOR = re.compile(r"(,|;|\band\b|\bor\b|\n)(?![^(]*\))", re.I)
_ALLERGY_ITEM = re.compile(
    r"^(?:[-•*]\s*)?(?P<s>[A-Za-z][A-Za-z0-9 '/-]*?)\s*(?:\((?P<r1>[^)]{1,60})\)|"
    r"(?:\s*[-:–]\s*|\s+(?:causes?|causing|caused|with|results? in|->)\s+)"
    r"(?P<r2>[A-Za-z][A-Za-z '/-]{0,60}))?\s*$",
    re.I,
)
_NOT_A_SUBSTANCE = re.compile(
    r"^(?:none|nkda|nka|no known.*|unknown|not known|n/?a|reviewed|see above)$|"
    r"\b(?:no|not|none|other|any|has|have|had|is|are|was|were|allerg\w*|reports?|denies)\b",
    re.I,
)
_ALLERGY_CLAUSE_END = re.compile(
    r"\n|;|(?<!\b[A-Za-z])\.(?=\s|$)|,?\s+(?:and|but)\s+(?:has|is|was|had|reports|denies|"
    r"no|not|she|he|they|the)\b|,\s*(?:which|who|that)\b",
    re.I,
)


def _allergy_list(text: str, start: int, end: int) -> list[Allergy]:
    """Items of an allergy list in text[start:end]: "sulfa (rash), codeine - nausea"."""
    allergies = []
    position = start
    for piece in _ALLERGY_SEPARATOR.split(text[start:end]):
        piece_start, position = position, position + len(piece)
        if not piece.strip() or _ALLERGY_SEPARATOR.fullmatch(piece):
            continue
        item_start, item_end = trimmed(text, piece_start, position)
        while item_end > item_start and text[item_end - 1] == ".":
            item_end -= 1
        match = _ALLERGY_ITEM.match(text[item_start:item_end])
        if not match:
            continue
        substance = match.group("s").strip()
        if len(substance.split()) > 4 or _NOT_A_SUBSTANCE.search(substance):
            continue
        reaction = (match.group("r1") or match.group("r2") or "").strip() or None
        span = Span(item_start, item_end)
        allergies.append(Allergy(substance, reaction, span, text[item_start:item_end]))
    return allergies


def find_allergies(
    text: str, low: str, sections: tuple[Section, ...]
) -> tuple[list[Allergy], bool]:
    allergies: list[Allergy] = []
    no_known = any_match(_NO_KNOWN_ALLERGIES, low, 0, len(low))
    for section in sections:
        if section.heading and "allerg" in section.heading.lower():
            if _NONE.fullmatch(section.text):
                no_known = True
            elif not any_match(_NO_KNOWN_ALLERGIES, low, section.start, section.end):
                allergies += _allergy_list(text, section.start, section.end)
    for cue in (match for pattern in _ALLERGY_CUES for match in scan(pattern, low)):
        if low[max(0, cue.start() - 25) : cue.start()].rstrip().endswith(("no", "denies")):
            continue
        stop = _ALLERGY_CLAUSE_END.search(text, cue.end())
        allergies += _allergy_list(text, cue.end(), stop.start() if stop else len(text))
    for word in scan(_ALLERGY_WORD, low):  # "penicillin allergy"
        before = _ALLERGEN_BEFORE.search(low, max(0, word.start() - 30), word.start())
        if before and before.group("s").split()[0] in ALLERGENS:
            start, end = before.span("s")
            allergies.append(Allergy(text[start:end], None, Span(start, end), text[start:end]))
    allergies.sort(key=lambda a: a.span.start)
    return dedup(allergies, lambda a: a.substance.lower()), no_known
