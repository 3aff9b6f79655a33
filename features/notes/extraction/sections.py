"""Headings, the sections they open and the SOAP letters each heading belongs to."""

import re
from bisect import bisect_right

from .results import SOAP, Section
from .text import lines, trimmed

# fmt: off
_KNOWN_HEADINGS = (
    "subjective", "objective", "assessment", "assessments", "plan", "plans",
    "assessment and plan", "assessment & plan", "assessment/plan", "a/p", "a&p",
    "impression", "impressions", "impression and plan", "impression/plan",
    "assessment and recommendations", "impression and recommendations",
    "diagnosis", "diagnoses", "dx", "problem list", "active problems", "problems",
    "chief complaint", "cc", "reason for visit", "reason for consultation", "reason for consult",
    "reason for referral", "reason for admission", "history of present illness", "hpi",
    "history", "interval history", "review of systems", "ros",
    "past medical history", "pmh", "medical history", "past surgical history", "psh",
    "surgical history", "past history", "family history", "fh", "social history", "sh",
    "birth history", "medications", "current medications", "meds", "home medications",
    "outpatient medications", "medications on admission", "admission medications",
    "discharge medications", "allergies", "allergy", "drug allergies",
    "physical exam", "physical examination", "exam", "examination", "pe",
    "vitals", "vital signs", "vitals reviewed", "results", "labs", "laboratory",
    "lab results", "laboratory data", "laboratory results", "imaging", "radiology", "studies",
    "data", "diagnostics", "diagnostic studies", "findings", "instructions",
    "patient instructions", "discharge instructions", "recommendations", "follow-up",
    "follow up", "followup", "disposition", "hospital course", "procedure",
    "procedure performed", "indications", "indication", "operative findings",
    "preoperative diagnosis", "pre-operative diagnosis", "postoperative diagnosis",
    "post-operative diagnosis", "anesthesia", "estimated blood loss", "complications",
    "specimens", "discharge diagnosis", "discharge diagnoses", "admission diagnosis",
    "admitting diagnosis", "principal diagnosis", "condition at discharge",
    "discharge condition", "medical decision making", "mdm", "discharge summary",
    "history and physical", "progress note", "consultation", "consult note",
    "operative note", "procedure note", "immunizations", "brief hospital course",
)
# fmt: on
_KNOWN_SET = frozenset(_KNOWN_HEADINGS)
_HEADING_CAPS = re.compile(r"^[ \t]*(?P<h>[A-Z][A-Z0-9 &/,'()\-]{0,58}[A-Z)])[ \t]*:?[ \t]*$")
_HEADING_MARKDOWN = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(?P<h>.*?)[ \t]*#*[ \t]*$")
_HEADING_BOLD = re.compile(
    r"^[ \t]*\*\*(?P<h>[^*\n]{1,60}?)[ \t]*:?[ \t]*\*\*[ \t]*:?[ \t]*(?P<rest>.*)$"
)
_NOT_MARKDOWN_HEADING = re.compile(r"\.\s|:\s*$|(?:\S+\s+){8}")

# The first rule that matches the lower-cased heading gives its letters.
# fmt: off
_SOAP_RULES: tuple[tuple[re.Pattern[str], tuple[SOAP, ...]], ...] = (
    (re.compile(r"^(?:history and physical|h&p|discharge summary|progress note|consult(?:ation)?"
                r"(?: note)?|operative note|procedure note)$"), ()),
    (re.compile(r"^(?:a ?[/&] ?p|(?:assessment|impression)s? ?(?:and|&|/) ?"
                r"(?:plan|recommendations?))$"), ("A", "P")),
    (re.compile(r"^s$|^subjective"), ("S",)),
    (re.compile(r"^o$|^objective"), ("O",)),
    (re.compile(r"^a$"), ("A",)),
    (re.compile(r"^p$"), ("P",)),
    (re.compile(r"\bdischarge (?:medications?|instructions?|plan)\b"), ("P",)),
    (re.compile(r"\b(?:diagnos[ie]s|dx|impressions?|assessments?|problem list|problems|"
                r"medical decision making|mdm)\b"), ("A",)),
    (re.compile(r"\b(?:plans?|instructions?|recommendations?|follow-?up|follow up|disposition|"
                r"patient education|orders)\b"), ("P",)),
    (re.compile(r"\b(?:exam|examination|physical|pe|vitals?|vital signs|results?|labs?|"
                r"laboratory|imaging|radiology|studies|diagnostics|data|findings)\b"), ("O",)),
    (re.compile(r"\b(?:chief complaint|cc|hpi|history|ros|review of systems|medications?|meds|"
                r"allerg(?:y|ies)|complaints?|reason for \w+|pmh|psh|fh|sh|immunizations)\b"),
     ("S",)),
)
# fmt: on


def normal_heading(heading: str) -> str:
    return re.sub(r"\s+", " ", heading.strip().lower())


def soap_of(heading: str | None) -> tuple[SOAP, ...]:
    """The S/O/A/P letters a heading belongs to; () when the heading is not recognised."""
    if heading is None:
        return ()
    name = normal_heading(heading)
    for pattern, letters in _SOAP_RULES:
        if pattern.search(name):
            return letters
    return ()


def _known_heading(label: str) -> bool:
    return " ".join(label.lower().split()) in _KNOWN_SET


def _heading_in_line(line: str) -> tuple[str, int] | None:
    """(heading as written, offset of the body in the line) when the line opens a section.

    Headings: markdown (`## Plan`), bold (`**Plan:**`), a known heading word followed by a colon
    and maybe text (`HPI: ...`, `S: ...`), a line holding only a known heading (`Plan`), or an
    ALL-CAPS line (`VITALS REVIEWED`). A sentence with a colon (`Patient denies: pain`) is not.
    Known headings are looked up in a set: far quicker than a regex of 150 alternatives.
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped[0] in "#*":
        for pattern in (_HEADING_MARKDOWN, _HEADING_BOLD):
            match = pattern.match(line)
            if not match or (
                pattern is _HEADING_MARKDOWN and _NOT_MARKDOWN_HEADING.search(match.group("h"))
            ):
                continue  # "# CHF: diuresed. ..." is a problem line, not a heading
            heading = match.group("h").rstrip(": \t")
            rest = match.groupdict().get("rest") or ""
            colon = heading.find(":")
            if colon > 0 and _known_heading(heading[:colon]):
                body = match.start("h") + colon + 1
                return heading[:colon].strip(), body + len(line[body:]) - len(line[body:].lstrip())
            if heading and (not rest or _known_heading(heading)):
                return heading, match.start("rest") if rest else len(line)
    colon = line.find(":", 0, 60)
    if colon > 0:
        label = line[:colon].strip()
        if label in ("S", "O", "A", "P") or _known_heading(label):
            body = colon + 1
            return label, body + len(line[body:]) - len(line[body:].lstrip())
    if len(stripped) > 60:
        return None
    label = stripped.rstrip(":").rstrip()
    if _known_heading(label):
        return label, len(line)
    match = _HEADING_CAPS.match(line) if stripped.upper() == stripped else None
    if match:
        heading = match.group("h")
        letters = sum(ch.isalpha() for ch in heading)
        if len(heading.split()) <= 7 and (letters >= 5 or _known_heading(heading)):
            return heading, len(line)
    return None


_RESULT_LABELS = frozenset(
    {"impression", "impressions", "conclusion", "findings", "interpretation"}
)


def _result_label(current: str, hit: tuple[str, int], line_length: int) -> bool:
    """ "Impression: no acute abnormality" inside RESULTS or IMAGING is the reading of a test,
    not the visit's assessment: a label with its text on the same line, in an O section."""
    return (
        normal_heading(hit[0]) in _RESULT_LABELS
        and hit[1] < line_length
        and soap_of(current) == ("O",)
    )


def split_sections(text: str) -> tuple[Section, ...]:
    """Sections in order; text before the first heading is a section with heading None."""
    found: list[tuple[str, int, int]] = []  # heading, line start, body start
    for line_start, line_end in lines(text):
        hit = _heading_in_line(text[line_start:line_end])
        if hit and not (found and _result_label(found[-1][0], hit, line_end - line_start)):
            found.append((hit[0], line_start, line_start + hit[1]))
    sections: list[Section] = []
    start, end = trimmed(text, 0, found[0][1] if found else len(text))
    if end > start:
        sections.append(Section(None, (), start, end, text[start:end]))
    for index, (heading, _, body_start) in enumerate(found):
        next_line = found[index + 1][1] if index + 1 < len(found) else len(text)
        start, end = trimmed(text, body_start, max(body_start, next_line))
        sections.append(Section(heading, soap_of(heading), start, end, text[start:end]))
    return tuple(sections)


class SectionIndex:
    """Which section's body holds an offset (the last section starting at or before it)."""

    def __init__(self, sections: tuple[Section, ...]) -> None:
        self.sections = sections
        self.starts = [section.start for section in sections]

    def section_at(self, position: int) -> Section | None:
        index = bisect_right(self.starts, position) - 1
        return self.sections[index] if index >= 0 else None

    def heading_at(self, position: int) -> str:
        section = self.section_at(position)
        return normal_heading(section.heading) if section and section.heading else ""
