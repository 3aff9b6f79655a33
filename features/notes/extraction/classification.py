"""The note type (admission, progress, consult, procedure, discharge, other) and why."""

import re

from .drug_names import DRUG_NAMES
from .results import Classification, NoteType, Section
from .sections import normal_heading
from .text import lines, lowered, scan, word_start

# fmt: off
_HEADING_CUES: tuple[tuple[NoteType, int, re.Pattern[str]], ...] = (
    ("discharge", 4, re.compile(r"discharge summary|hospital course|discharge (?:diagnos|"
                                r"medication|instruction|condition)|condition at discharge")),
    ("procedure", 4, re.compile(r"procedure note|operative (?:note|report|findings)|"
                                r"(?:pre|post)-?operative diagnosis|^procedures? performed$|"
                                r"^procedure$|estimated blood loss|^anesthesia$|^specimens?$")),
    ("admission", 4, re.compile(r"history and physical|^h&p$|admission (?:note|diagnosis|orders)|"
                                r"reason for admission|admitting diagnosis|"
                                r"medications on admission")),
    ("consult", 4, re.compile(r"consult|reason for referral")),
    ("progress", 4, re.compile(r"progress note|interval history")),
    ("progress", 1, re.compile(r"^(?:s|subjective)$")),
)
# Each phrase opens with a literal, so `re` jumps between candidates instead of trying every
# position; "before" is what must come just before the phrase (checked on a short slice).
_WAS = r"(?:was|is|been|being|were) $"
_CUE_TABLE: tuple[tuple[NoteType, int, str, str | None], ...] = (
    ("discharge", 3, r"discharge summary\b", None),
    ("discharge", 3, r"discharged\s+(?:home|to)\b", None),
    ("discharge", 3, r"discharge date\b", None),
    ("discharge", 3, r"date of discharge\b", None),
    ("discharge", 3, r"day of discharge\b", None),
    ("discharge", 3, r"hospital course\b", None),
    ("procedure", 3, r"procedure note\b", None),
    ("procedure", 3, r"operative (?:note|report)\b", None),
    ("procedure", 3, r"pre-?operative diagnosis\b", None),
    ("procedure", 3, r"post-?operative diagnosis\b", None),
    ("procedure", 3, r"procedure performed\b", None),
    ("procedure", 3, r"estimated blood loss\b", None),
    ("procedure", 3, r"ebl\b", None),
    ("procedure", 3, r"indications? for (?:the )?procedure\b", None),
    ("procedure", 3, r"operating room\b", r"(?:brought|taken) to the $"),
    ("procedure", 1, r"informed consent was obtained\b", None),
    ("procedure", 1, r"tolerated the procedure\b", None),
    ("admission", 3, r"history and physical\b", None),
    ("admission", 3, r"h&p\b", None),
    ("admission", 3, r"admission (?:note|date|diagnosis|orders)\b", None),
    ("admission", 3, r"date of admission\b", None),
    ("admission", 3, r"admitting diagnosis\b", None),
    ("admission", 3, r"reason for admission\b", None),
    ("admission", 3, r"admitted\s+(?:to|for|with|on|from)\b", _WAS),
    ("admission", 3, r"admit(?:ted)? to (?:the )?(?:medicine|hospitalist|icu|floor|telemetry)\b",
     None),
    ("consult", 3, r"consult(?:ation)?\s+(?:note|requested|request)\b", None),
    ("consult", 3, r"reason for (?:consult(?:ation)?|referral)\b", None),
    ("consult", 3, r"seen in consultation\b", None),
    ("consult", 3, r"asked to (?:see|evaluate)\b", None),
    ("consult", 3, r"at the request of\b", None),
    ("consult", 3, r"referred\s+(?:by|from)\b", None),
    ("consult", 3, r"referred\b(?!\s+(?:by|from)\b)", _WAS),
    ("consult", 3, r"who referred\b", None),
    ("consult", 3, r"referral to (?:me|us|our)\b", None),
    ("consult", 3, r"new patient\b", None),
    ("consult", 3, r"thank you for (?:the|this|your) (?:referral|consult\w*)\b", None),
    ("consult", 1, r"evaluation of\b", r"(?:presents?|presenting|here|seen|comes? in)"
                   r"(?: to (?:the )?(?:clinic|office))?(?: today)? for (?:the |an |a )?$"),
    ("progress", 3, r"progress note\b", None),
    ("progress", 3, r"interval history\b", None),
    ("progress", 3, r"follow[- ]?up (?:visit|of|for|appointment)\b", None),
    ("progress", 3, r"follow[- ]?up\b(?! (?:visit|of|for|appointment)\b)",
     r"(?:presents?|here|returns?|seen)(?: today)? for (?:a |his |her |their )?(?:routine )?$"),
    ("progress", 3, r"since (?:the|his|her) last visit\b", None),
    ("progress", 2, r"annual (?:exam|examination|physical|visit|wellness)\b", None),
    ("progress", 2, r"chronic problems\b", None),
    ("progress", 2, r"hospital day\b", None),
)
# fmt: on
_PHRASE_CUES = tuple(
    (kind, weight, re.compile(phrase), re.compile(before) if before else None)
    for kind, weight, phrase, before in _CUE_TABLE
)
_ONGOING_CARE = tuple(
    re.compile(phrase)
    for phrase in (
        r"medical history (?:significant|notable) for",
        r"regarding (?:his|her|their) \w+",
        r"in terms of (?:his|her|their) \w+",
        r"with regard to (?:his|her|their) \w+",
        r"as for (?:his|her|their) \w+",
        r"continues? (?:with |taking |to take |on )?(?P<drug>[a-z][\w-]+)",
    )
)
_TITLES: tuple[tuple[NoteType, re.Pattern[str]], ...] = (
    ("discharge", re.compile(r"\bdischarge summary\b")),
    ("procedure", re.compile(r"\b(?:operative|procedure|op) (?:note|report)\b")),
    ("admission", re.compile(r"\b(?:history and physical|h&p|admission note)\b")),
    ("consult", re.compile(r"\bconsult(?:ation)?\b")),
    ("progress", re.compile(r"\bprogress note\b")),
)
_FOLLOW_UP_COMPLAINT = re.compile(r"follow[- ]?up\b", re.I)
_COMPLAINT_HEADING = re.compile(r"chief complaint|cc$|reason for visit")
_PRIORITY: tuple[NoteType, ...] = ("discharge", "procedure", "admission", "consult", "progress")


class _Cues:
    """The weighted cues found so far, and where each was found, per note type."""

    def __init__(self) -> None:
        self.scores: dict[NoteType, int] = dict.fromkeys(_PRIORITY, 0)
        self.evidence: dict[NoteType, list[tuple[int, str]]] = {kind: [] for kind in _PRIORITY}

    def add(self, kind: NoteType, weight: int, position: int, reason: str) -> None:
        self.scores[kind] += weight
        self.evidence[kind].append((position, reason))

    def best(self) -> NoteType:
        return max(_PRIORITY, key=lambda kind: (self.scores[kind], -_PRIORITY.index(kind)))


def _title_cues(text: str, low: str, sections: tuple[Section, ...], cues: _Cues) -> None:
    """A short line before the first heading naming the type: "Psych Consult - Depression"."""
    if not sections or sections[0].heading is not None:
        return
    for line_start, line_end in list(lines(text, sections[0].start, sections[0].end))[:5]:
        line = low[line_start:line_end]
        if len(line.split()) > 8:
            continue
        kind = next((kind for kind, title in _TITLES if title.search(line)), None)
        if kind:
            cues.add(kind, 3, line_start, f'title "{text[line_start:line_end].strip()}"')


def _heading_cues(sections: tuple[Section, ...], cues: _Cues) -> None:
    for section in sections:
        if not section.heading:
            continue
        heading = normal_heading(section.heading)
        for kind, weight, pattern in _HEADING_CUES:
            if pattern.search(heading):
                cues.add(kind, weight, section.start, f'heading "{section.heading}"')
                break
        if _COMPLAINT_HEADING.match(heading) and _FOLLOW_UP_COMPLAINT.match(section.text):
            cues.add("progress", 3, section.start, f'chief complaint "{section.text[:40]}"')


def _phrase_cues(text: str, low: str, cues: _Cues) -> None:
    for kind, weight, pattern, before in _PHRASE_CUES:
        for match in scan(pattern, low):
            start = match.start()
            if before:
                lead = before.search(low, max(0, start - 60), start)
                if lead is None or not word_start(low, lead.start()):
                    continue
                start = lead.start()
            cues.add(kind, weight, start, f'phrase "{text[start : match.end()]}" at {start}')


def _ongoing_care_cues(text: str, low: str, cues: _Cues) -> None:
    """At most two weak progress cues: one sign of ongoing care does not make a progress note."""
    ongoing = sorted(
        (match.start(), match.end())
        for pattern in _ONGOING_CARE
        for match in scan(pattern, low)
        if match.groupdict().get("drug") is None or match.group("drug") in DRUG_NAMES
    )
    for start, end in ongoing[:2]:
        cues.add("progress", 1, start, f'ongoing care "{text[start:end]}" at {start}')


def _from_cues(cues: _Cues) -> Classification:
    best = cues.best()
    reasons = [reason for _, reason in sorted(cues.evidence[best])][:6]
    others = ", ".join(f"{k} {v}" for k, v in cues.scores.items() if v and k != best)
    reasons.append(f"score {best} {cues.scores[best]}" + (f" vs {others}" if others else ""))
    return Classification(best, tuple(reasons))


def _from_layout(sections: tuple[Section, ...]) -> Classification:
    """Without any cue: a visit-note layout (subjective plus assessment or plan) is progress."""
    letters = {letter for section in sections for letter in section.soap}
    if "S" in letters and letters & {"A", "P"}:
        opening = next(s.heading for s in sections if "S" in s.soap)
        closing = next(s.heading for s in sections if set(s.soap) & {"A", "P"})
        reason = (
            f'no type-specific heading or phrase; visit-note layout ("{opening}" ... '
            f'"{closing}") defaults to progress'
        )
        return Classification("progress", (reason,))
    reason = (
        "no heading or phrase indicating admission, progress, consult, procedure or "
        "discharge, and no visit-note layout (subjective plus assessment or plan sections)"
    )
    return Classification("other", (reason,))


def classify(text: str, sections: tuple[Section, ...]) -> Classification:
    """The note type with the most weighted cues; ties go to the earlier type in _PRIORITY.

    Strong cues (3-4): headings and set phrases of each type. Weak cues: "presents for the
    evaluation of" (consult, 1) and at most two signs of ongoing care (progress, 1 each):
    "Regarding his diabetes", "past medical history significant for", "continue <drug>". A
    visit note with no cue at all (subjective plus assessment or plan sections) is a progress
    note; anything else without a cue is "other".
    """
    low = lowered(text)
    cues = _Cues()
    _title_cues(text, low, sections, cues)
    _heading_cues(sections, cues)
    _phrase_cues(text, low, cues)
    _ongoing_care_cues(text, low, cues)
    if cues.scores[cues.best()] > 0:
        return _from_cues(cues)
    return _from_layout(sections)
