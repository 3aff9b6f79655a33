"""Whether a finding is the patient's current problem: ConText-style triggers in its sentence.

Each finding gets one status: "negated" (denied, ruled out), "family" (a relative's), "possible"
(a differential, a hypothesis, something to watch for), "historical" (resolved, remote) or
"current". A trigger before the finding reaches forward to the end of its clause; a trigger
after the finding ("... was ruled out", "... has resolved") reaches back to the sentence start.

medspaCy's ConText was measured against these rules on the same notes and phrases (see the
README's "Note extraction" section): it needs spaCy, and its default "history of" trigger
makes every past medical history item historical, which is not how the notes use it.
"""

import re

from .results import DiagnosisStatus as Status
from .results import Section

# A sentence, or a clause that a conjunction of contrast ends: the scope of a trigger.
_SENTENCE_BREAK = re.compile(r"[\n;?!]|(?<!\b[A-Za-z])(?<!\bDr)(?<!\bvs)\.(?=\s|$)")
_SCOPE_END = re.compile(
    r"\b(?:but|however|although|though|except|aside from|apart from|other than|presents?|"
    r"presenting|now|currently|complains?)\b",
    re.IGNORECASE,
)
# Triggers before the finding, by the status they give; the first status in this order wins.
_BEFORE: tuple[tuple[Status, re.Pattern[str]], ...] = tuple(
    (status, re.compile(pattern, re.IGNORECASE))
    for status, pattern in (
        (
            "family",
            r"\b(?:family\s+history|(?:mother|father|mom|dad|brother|sister|sibling|son|"
            r"daughter|grand(?:mother|father|parent)|aunt|uncle|cousin|parent|relative)s?)\b"
            r"(?!\s+(?:notes?|reports?|states?|says?|denies|mentions?|brought|is\s+concerned|"
            r"accompan\w*|asks?|wants?))",
        ),
        (
            "negated",
            r"\b(?:denies|denied|deny|denying|no|negative\s+for|without|free\s+of|"
            r"(?:does|did|do)\s+not\s+have|(?:has|have)\s+(?:not|never)\s+had|never\s+had|"
            r"absence\s+of|no\s+evidence\s+of|no\s+signs?\s+of|ruled\s+out|nor|"
            r"resolution\s+of)\b",
        ),
        (
            "possible",
            r"\b(?:rule\s+out|r/o|to\s+rule\s+out|possible|possibly|probable|questionable|"
            r"question\s+of|concern(?:ed|ing)?\s+(?:for|about)|worried\s+about|"
            r"worrisome\s+for|suspicious\s+for|differential(?:\s+diagnosis)?(?:\s+includes?)?|"
            r"versus|vs\.?|evaluate\s+(?:for|her\s+for|him\s+for)|screen(?:ing)?\s+for|"
            r"risk\s+(?:of|for)|at\s+risk|if\s+(?:she|he|they|it|you|the|symptoms?)|"
            r"in\s+case\s+of|should\s+(?:she|he|they)\s+develop|watch\s+for|"
            r"monitor\s+for|cannot\s+exclude)\b",
        ),
        (
            "historical",
            r"\b(?:resolved|remote\s+history\s+of|childhood|as\s+a\s+(?:child|kid|teenager)|"
            r"years\s+ago|previously\s+(?:had|treated)|used\s+to\s+have|in\s+remission\s+from)\b",
        ),
    )
)
# Triggers after the finding, within its sentence.
_AFTER: tuple[tuple[Status, re.Pattern[str]], ...] = tuple(
    (status, re.compile(pattern, re.IGNORECASE))
    for status, pattern in (
        ("negated", r"^[^.;\n]{0,40}?\b(?:was|were|is|has\s+been|been)\s+(?:ruled\s+out|"
                    r"excluded|negative)\b|^\W*(?:ruled\s+out|denied|absent|negative)\b"),
        ("possible", r"^[^.;\n]{0,30}?\b(?:is|are|was|remains?)\s+(?:possible|suspected|"
                     r"unlikely|less\s+likely|considered|in\s+the\s+differential)\b|"
                     r"^\s*(?:versus|vs\.?|or)\s|^\s*\?"),
        ("historical", r"^[^.;\n]{0,40}?\b(?:resolved|in\s+remission|as\s+a\s+child|"
                       r"in\s+(?:his|her|their)\s+(?:childhood|youth|twenties|teens)|"
                       r"years\s+ago|in\s+the\s+(?:remote\s+)?past)\b"),
    )
)  # fmt: skip
# A finding that is itself a negative or normal reading.
_NEGATED_FINDING = re.compile(
    r"(?:no|not|negative|without|normal|unremarkable|within\s+normal\s+limits)\b", re.I
)
_ORDER: tuple[Status, ...] = ("family", "negated", "possible", "historical")


def _clause_before(text: str, start: int, floor: int) -> str:
    """The text from the start of the finding's sentence (or the last scope end) to it."""
    breaks = list(_SENTENCE_BREAK.finditer(text, max(floor, start - 300), start))
    begin = breaks[-1].end() if breaks else max(floor, start - 300)
    clause = text[begin:start]
    ends = list(_SCOPE_END.finditer(clause))
    return clause[ends[-1].end() :] if ends else clause


def _sentence_after(text: str, end: int, ceiling: int) -> str:
    stop = _SENTENCE_BREAK.search(text, end, min(ceiling, end + 200))
    return text[end : stop.start() if stop else min(ceiling, end + 200)]


def status_of(text: str, start: int, end: int, section: Section | None) -> Status:
    """The status of the finding text[start:end], read from its section and its sentence."""
    heading = (section.heading or "").lower() if section else ""
    if "family" in heading:
        return "family"
    floor = section.start if section else 0
    ceiling = section.end if section else len(text)
    if _NEGATED_FINDING.match(text, start, end):
        return "negated"  # "No acute abnormality", "Normal sinus rhythm"
    before, after = _clause_before(text, start, floor), _sentence_after(text, end, ceiling)
    found = {status for status, trigger in _BEFORE if trigger.search(before)}
    found |= {status for status, trigger in _AFTER if trigger.search(after)}
    return next((status for status in _ORDER if status in found), "current")
