"""A note's key passages, picked once when it is stored: the first sentences of why the patient
came, the results, the assessment and the plan. Summaries of many notes read these, not the
whole text."""

import re
from collections.abc import Sequence
from typing import Any

SENTENCES_KEPT = 3
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
# Sentences that narrate the visit rather than the patient.
SMALL_TALK = re.compile(
    r"\b(?:discussed (?:with|the)|I (?:have )?(?:explained|advised|reviewed)|pleasant)\b",
    re.IGNORECASE,
)
REASON_HEADINGS = (
    "CHIEF COMPLAINT",
    "CC",
    "REASON FOR",
    "PRESENTING",
    "HISTORY OF PRESENT ILLNESS",
    "HPI",
)
RESULT_HEADINGS = ("RESULTS", "LAB", "IMAGING", "FINDINGS", "INVESTIGATIONS")


def first_sentences(text: str, count: int = SENTENCES_KEPT) -> list[str]:
    """Up to `count` sentences from the start of the text, small talk skipped when there is
    more to choose from."""
    sentences = [s for s in SENTENCE_END.split(" ".join(text.split())) if s]
    chosen = []
    skippable = len(sentences) - count
    for sentence in sentences:
        if skippable > 0 and SMALL_TALK.search(sentence):
            skippable -= 1
            continue
        chosen.append(sentence if sentence[-1] in ".!?" else sentence + ".")
        if len(chosen) == count:
            break
    return chosen


def _by_heading(sections: Sequence[dict[str, Any]], headings: tuple[str, ...]) -> str:
    for section in sections:
        heading = (section.get("heading") or "").upper()
        if heading and heading.startswith(headings):
            return section["text"]
    return ""


def _by_soap(sections: Sequence[dict[str, Any]], part: str) -> str:
    return "\n".join(s["text"] for s in sections if part in (s.get("soap") or ()))


def highlights(sections: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """{reason, results, assessment, plan}: each a list of up to three sentences."""
    reason = (
        _by_heading(sections, REASON_HEADINGS)
        or _by_soap(sections, "S")
        or "\n".join(s["text"] for s in sections)
    )
    return {
        "reason": first_sentences(reason, 1),
        "results": first_sentences(_by_heading(sections, RESULT_HEADINGS)),
        "assessment": first_sentences(_by_soap(sections, "A")),
        "plan": first_sentences(_by_soap(sections, "P")),
    }
