"""The plan: whole sentences of the plan sections, each an item with its place in the note.

Nothing is cut from the middle of a sentence. The reasoning of an "assessment and plan"
("Medical Reasoning: ...") and the problem names that head its items are not plan items.
"""

import re

from .results import PlanItem, Section, Span
from .text import lines, trimmed

_ITEM_PREFIX = re.compile(r"[ \t]*(?:\d{1,2}[.)]|#\d*\.?|--?|[•*+▪◦])[ \t]*")
_LABEL = re.compile(r"(?P<label>[A-Za-z][\w /&'-]{0,40}?)\s*:\s*")
# Sub-labels whose text is no plan: why, not what is done.
_NOT_PLAN_LABEL = re.compile(
    r"\b(?:reasoning|rationale|assessment|impression|diagnos[ie]s|history|findings|results?)$",
    re.I,
)
_SENTENCE_END = re.compile(r"(?<!\b[A-Za-z])(?<!\bDr)(?<!\bvs)(?<!\bMr)(?<!\bMs)\.(?=\s|$)|[?!]")
# A plan sentence says what is done: an action, a referral, a test, a return.
_ACTION = re.compile(
    r"\b(?:continu\w*|start\w*|stop\w*|increas\w*|decreas\w*|reduc\w*|chang\w*|switch\w*|"
    r"discontinu\w*|prescrib\w*|order\w*|refer\w*|schedul\w*|follow\w*|return\w*|recheck\w*|"
    r"repeat\w*|obtain\w*|check\w*|monitor\w*|advis\w*|recommend\w*|counsel\w*|educat\w*|"
    r"instruct\w*|encourag\w*|avoid\w*|take|taking|apply|use|ice|rest|elevat\w*|"
    r"will|should|need\w*|get|see|call|send|sent|referral|therapy|injection|surgery|"
    r"appointment)\b",
    re.I,
)
# Not what is done but how the patient took it, or what a test showed.
_NOT_ACTION = re.compile(
    r"\b(?:understand\w*|agree\w*|questions|showed|revealed|unremarkable)\b", re.I
)
MAX_ITEM_CHARACTERS = 240
MAX_ITEMS = 30


def _sentences(text: str, start: int, end: int):
    position = start
    for stop in _SENTENCE_END.finditer(text, start, end):
        yield position, stop.end()
        position = stop.end()
    yield position, end


def find_plan(text: str, sections: tuple[Section, ...]) -> list[PlanItem]:
    items: list[PlanItem] = []
    for section in sections:
        if "P" not in section.soap:
            continue
        for line_start, line_end in lines(text, section.start, section.end):
            prefix = _ITEM_PREFIX.match(text, line_start, line_end)
            position = prefix.end() if prefix else line_start
            label = _LABEL.match(text, position, line_end)
            if label:
                if _NOT_PLAN_LABEL.search(label.group("label").strip()):
                    continue
                position = label.end()
            for a, b in _sentences(text, position, line_end):
                a, b = trimmed(text, a, b)
                sentence = text[a:b]
                if (
                    len(sentence.split()) >= 3
                    and len(sentence) <= MAX_ITEM_CHARACTERS
                    and _ACTION.search(sentence)
                    and not _NOT_ACTION.search(sentence)
                ):
                    items.append(PlanItem(sentence, Span(a, b)))
    return items[-MAX_ITEMS:]
