"""The LLM's facts held against the notes.

Two rules keep an LLM-written summary safe:
- every diagnosis, medication and allergy the LLM names must quote the note it cites, and the
  quote must name it (after normalising whitespace, case and typographic quotes); anything
  else is left out and reported as an unsupported fact, with the reason;
- nothing the notes record goes missing: every allergy, medication and current diagnosis the
  extraction found stays in the summary whatever the LLM says, and where the two disagree
  (an allergy left out, "no known allergies" against a recorded one, another dose) the notes'
  fact is shown and the disagreement reported.

Pure functions of the answer, the notes and their extracted facts: no database, no HTTP.
"""

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from features.summaries.schemas import LLMCitation, LLMSummary

# Typographic characters an LLM may write for the plain ones, or the other way round.
_FOLD = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_TOKEN = re.compile(r"[a-z0-9]+")
# Words that do not make one fact another: "history of hypertension" is "hypertension".
# fmt: off
_FILLER = frozenset({
    "a", "an", "the", "of", "and", "or", "with", "to", "in", "on", "for", "at", "by", "his",
    "her", "their", "history", "prior", "known", "chronic", "mild", "moderate", "severe", "acute",
})
# fmt: on
# A cue before a finding, in the same clause, that denies it or leaves it open.
_NEGATION = re.compile(
    r"\b(?:no|not|denies|denied|deny|negative for|without|rule out|ruled out|r/o|free of|"
    r"absence of|never|unlikely|rather than|instead of)\b"
)
_CLAUSE_BREAK = re.compile(r"[.;:!?]|\bbut\b")
_NO_KNOWN_ALLERGIES = re.compile(
    r"\b(?:no known (?:drug |medication )?allergies|nkda|nka|no (?:drug )?allergies)\b"
)


SameDrug = Callable[[str, str], bool]


def fold(text: str) -> tuple[str, list[int]]:
    """The text lower-cased with each run of whitespace one space and typographic quotes and
    dashes made plain, and for each character of it the offset in `text` it came from."""
    chars: list[str] = []
    origin: list[int] = []
    space_pending = False
    for index, char in enumerate(text):
        if char.isspace():
            space_pending = bool(chars)
            continue
        if space_pending:
            chars.append(" ")
            origin.append(index)
            space_pending = False
        for low in char.translate(_FOLD).lower():
            chars.append(low)
            origin.append(index)
    return "".join(chars), origin


def _tokens(text: str) -> list[str]:
    return [_singular(token) for token in _TOKEN.findall(text)]


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def content_tokens(name: str) -> frozenset[str]:
    """The words that say what a fact is: "History of Hypertensions" -> {"hypertension"}."""
    return frozenset(t for t in _tokens(fold(name)[0]) if t not in _FILLER)


def same_fact(a: str, b: str) -> bool:
    """One name's words hold the other's: "penicillin" and "penicillin allergy", "heart
    failure" and "congestive heart failure"."""
    x, y = content_tokens(a), content_tokens(b)
    return bool(x and y) and (x <= y or y <= x)


@dataclass
class NoteEvidence:
    """One note as the checks need it: its id (as sent to the LLM), text and extracted facts."""

    id: str
    text: str
    facts: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def folded(self) -> tuple[str, list[int]]:
        return fold(self.text)

    def find(self, quote: str) -> tuple[int, int] | None:
        """The span of `quote` in the note's text, compared folded; None when it is not there."""
        wanted = fold(quote)[0].strip(" \"'.,;:…")
        text, origin = self.folded
        if not wanted:
            return None
        at = text.find(wanted)
        if at == -1:
            return None
        return origin[at], origin[at + len(wanted) - 1] + 1


@dataclass(frozen=True)
class Unsupported:
    kind: str
    name: str
    note_id: str | None
    quote: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "note_id": self.note_id,
            "quote": self.quote,
            "reason": self.reason,
        }


@dataclass
class Checked:
    """The LLM's facts that passed, as key-information items with citations, and the rest."""

    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    medications: list[dict[str, Any]] = field(default_factory=list)
    allergies: list[dict[str, Any]] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)


def _negated(quote_folded: str, name: str) -> bool:
    """A cue that denies or leaves open the finding comes before it in its clause."""
    words = content_tokens(name)
    first = min(
        (m.start() for m in _TOKEN.finditer(quote_folded) if _singular(m.group()) in words),
        default=None,
    )
    if first is None:
        return False
    clause_start = max((m.end() for m in _CLAUSE_BREAK.finditer(quote_folded, 0, first)), default=0)
    return _NEGATION.search(quote_folded, clause_start, first) is not None


def _overlaps(item: dict[str, Any], start: int, end: int) -> bool:
    span = item.get("span") or {}
    return span.get("start", -1) < end and start < span.get("end", -1)


def _names_of_drug(item: dict[str, Any]) -> Iterable[str]:
    for key in ("name", "brand", "text"):
        if item.get(key):
            yield item[key]


def _quote_names(
    kind: str, name: str, note: NoteEvidence, span: tuple[int, int], same_drug: SameDrug
) -> bool:
    quoted = fold(note.text[span[0] : span[1]])[0]
    if content_tokens(name) and content_tokens(name) <= frozenset(_tokens(quoted)):
        return True
    if kind != "medication":
        return False
    # "furosemide" for "Lasix 20 mg daily": the same drug by its other name.
    if any(same_drug(name, word) for word in _TOKEN.findall(quoted)):
        return True
    return any(
        _overlaps(item, *span) and any(same_drug(name, other) for other in _names_of_drug(item))
        for item in note.facts.get("medications", ())
    )


def _not_current_in_note(name: str, note: NoteEvidence, span: tuple[int, int]) -> bool:
    """The note's extraction read this finding, at this place, as denied, possible or family."""
    return any(
        item.get("status", "current") in ("negated", "possible", "family")
        and _overlaps(item, *span)
        and same_fact(item.get("name", ""), name)
        for item in note.facts.get("diagnoses", ())
    )


def _plain_same_drug(a: str, b: str) -> bool:
    return fold(a)[0] == fold(b)[0]


def _check_citation(
    kind: str,
    name: str,
    citation: LLMCitation,
    notes: dict[str, NoteEvidence],
    same_drug: SameDrug,
) -> tuple[dict[str, Any] | None, str | None]:
    """(the citation with its span in the note, None) or (None, the reason it fails)."""
    note = notes.get(citation.note_id.strip())
    if note is None:
        return None, "note_not_given"
    span = note.find(citation.quote)
    if span is None:
        return None, "quote_not_in_note"
    if not _quote_names(kind, name, note, span, same_drug):
        return None, "not_in_quote"
    if kind != "medication" and (
        _negated(fold(note.text[span[0] : span[1]])[0], name)
        or _not_current_in_note(name, note, span)
    ):
        return None, "negated_in_note"
    start, end = span
    return {"note_id": note.id, "start": start, "end": end, "text": note.text[start:end]}, None


def check_answer(
    answer: LLMSummary, notes: Sequence[NoteEvidence], same_drug: SameDrug = _plain_same_drug
) -> Checked:
    """Each fact of the answer kept with the citations that hold; a fact none of whose
    citations holds is unsupported (the reason of its first citation is given)."""
    by_id = {note.id: note for note in notes}
    checked = Checked()
    groups: list[tuple[str, str, Sequence[Any], list[dict[str, Any]]]] = [
        ("diagnosis", "name", answer.diagnoses, checked.diagnoses),
        ("medication", "name", answer.medications, checked.medications),
        ("allergy", "substance", answer.allergies, checked.allergies),
    ]
    for kind, name_field, items, kept in groups:
        for item in items:
            name = getattr(item, name_field)
            citations, reasons = [], []
            for citation in item.citations:
                good, reason = _check_citation(kind, name, citation, by_id, same_drug)
                if good:
                    citations.append(good)
                else:
                    reasons.append(reason)
            if citations:
                fields = item.model_dump(exclude={"citations"})
                note_ids = list(dict.fromkeys(c["note_id"] for c in citations))
                kept.append({**fields, "note_ids": note_ids, "citations": citations})
            else:
                first = item.citations[0]
                checked.unsupported.append(
                    Unsupported(kind, name, first.note_id, first.quote, reasons[0])
                )
    return checked


# --- merging with what the notes say -------------------------------------------------------


def _normal_dose(dose: str | None) -> str | None:
    return None if dose is None else re.sub(r"\s+", "", dose.lower())


def _merge_item(
    from_llm: dict[str, Any], from_notes: dict[str, Any], fields: tuple[str, ...]
) -> dict[str, Any]:
    merged = dict(from_llm)
    for name in fields:  # the notes' fact wins where they have one
        if from_notes.get(name) is not None:
            merged[name] = from_notes[name]
    merged["note_ids"] = list(dict.fromkeys([*from_notes["note_ids"], *from_llm["note_ids"]]))
    merged["citations"] = [*from_notes.get("citations", ()), *from_llm["citations"]]
    merged["found_by"] = ["llm", "notes"]
    return merged


@dataclass
class Merged:
    key_information: dict[str, Any]
    disagreements: list[dict[str, Any]]
    summary: str


def _disagreement(kind: str, name: str, issue: str, detail: str) -> dict[str, Any]:
    return {"kind": kind, "name": name, "issue": issue, "detail": detail}


def merge(
    checked: Checked,
    answer: LLMSummary,
    from_notes: dict[str, Any],
    same_drug: SameDrug = _plain_same_drug,
) -> Merged:
    """The summary's key information: the LLM's checked facts joined with the notes' own.

    `from_notes` is the extractive key information (diagnoses, medications, allergies,
    no_known_allergies, latest_vital_signs), each item citing its notes."""
    disagreements: list[dict[str, Any]] = []
    result: dict[str, list[dict[str, Any]]] = {}
    plans = (
        ("diagnosis", "diagnoses", "name", (), same_fact),
        ("medication", "medications", "name", ("dose", "route", "frequency"), same_drug),
        ("allergy", "allergies", "substance", ("substance", "reaction"), same_fact),
    )
    for kind, key, name_field, note_fields, same in plans:
        notes_items = list(from_notes[key])
        merged: list[dict[str, Any]] = []
        for item in getattr(checked, key):
            match = next((n for n in notes_items if same(item[name_field], n[name_field])), None)
            if match is None:
                merged.append({**item, "found_by": ["llm"]})
                continue
            notes_items.remove(match)
            if kind == "medication" and _differs(item.get("dose"), match.get("dose")):
                disagreements.append(
                    _disagreement(
                        kind,
                        match["name"],
                        "differs_from_notes",
                        f"the LLM gave {item['dose']}; the notes give {match['dose']}",
                    )
                )
            merged.append(_merge_item(item, match, note_fields))
        for item in notes_items:  # what the LLM left out stays in
            merged.append({**item, "found_by": ["notes"]})
            if kind == "allergy":
                disagreements.append(
                    _disagreement(
                        kind,
                        item["substance"],
                        "omitted_by_llm",
                        "the notes record this allergy; the LLM's answer did not list it",
                    )
                )
        result[key] = merged

    summary = answer.summary
    recorded = [item for item in result["allergies"] if "notes" in item["found_by"]]
    says_none = answer.no_known_allergies or _NO_KNOWN_ALLERGIES.search(fold(summary)[0])
    if recorded and says_none:
        names = ", ".join(_allergy_text(item) for item in recorded)
        for item in recorded:
            disagreements.append(
                _disagreement(
                    "allergy",
                    item["substance"],
                    "contradicted_by_llm",
                    "the LLM said there are no known allergies; the notes record this one",
                )
            )
        summary = f"Allergies recorded in the notes: {names}. {summary}"
    key_information = {
        **from_notes,
        **result,
        "no_known_allergies": from_notes["no_known_allergies"] and not result["allergies"],
        "latest_vital_signs": from_notes["latest_vital_signs"],
    }
    return Merged(key_information, disagreements, summary)


def _differs(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _normal_dose(a) != _normal_dose(b)


def _allergy_text(item: dict[str, Any]) -> str:
    reaction = item.get("reaction")
    return f"{item['substance']} ({reaction})" if reaction else item["substance"]


def named_in_text(text: str, unsupported: Sequence[Unsupported]) -> list[Unsupported]:
    """The unsupported facts whose names the LLM's own text uses."""
    words = frozenset(_tokens(fold(text)[0]))
    return [
        fact
        for fact in unsupported
        if content_tokens(fact.name) and content_tokens(fact.name) <= words
    ]
