"""The offline summariser: a narrative and key facts put together from the notes' highlights
and extracted data, with no model. Deterministic, so the same notes always give the same summary.

It is the summary when no LLM is configured, and the fallback whenever the LLM fails."""

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Audience = Literal["clinician", "family", "patient"]
Length = Literal["brief", "standard", "detailed"]

# Plain words for family and patients.
PLAIN_WORDS = {
    "hypertension": "high blood pressure",
    "hyperlipidemia": "high cholesterol",
    "hypercholesterolemia": "high cholesterol",
    "diabetes mellitus": "diabetes",
    "type 2 diabetes mellitus": "type 2 diabetes",
    "myocardial infarction": "heart attack",
    "cerebrovascular accident": "stroke",
    "atrial fibrillation": "an irregular heartbeat (atrial fibrillation)",
    "congestive heart failure": "heart failure",
    "dyspnea": "shortness of breath",
    "edema": "swelling",
    "pyrexia": "fever",
    "syncope": "fainting",
    "hypothyroidism": "an underactive thyroid",
    "hyperthyroidism": "an overactive thyroid",
    "gastroesophageal reflux disease": "acid reflux",
    "gerd": "acid reflux",
    "copd": "a long-term lung disease (COPD)",
    "chronic obstructive pulmonary disease": "a long-term lung disease (COPD)",
    "osteoarthritis": "joint wear-and-tear arthritis",
    "nephrolithiasis": "kidney stones",
    "cholelithiasis": "gallstones",
    "fracture": "broken bone",
    "orif": "surgery to fix the broken bone",
    "bid": "twice a day",
    "tid": "three times a day",
    "qid": "four times a day",
    "qd": "once a day",
    "qhs": "at bedtime",
    "prn": "when needed",
    "po": "by mouth",
}
_PLAIN_PATTERN = re.compile(
    r"\b("
    + "|".join(re.escape(word) for word in sorted(PLAIN_WORDS, key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)
VITAL_NAMES = {
    "blood_pressure": "blood pressure",
    "heart_rate": "heart rate",
    "temperature": "temperature",
    "respiratory_rate": "breathing rate",
    "spo2": "oxygen saturation",
    "weight": "weight",
    "height": "height",
}


@dataclass(frozen=True, slots=True)
class NoteFacts:
    """What the summariser needs of one note: not its text, which may be long."""

    id: uuid.UUID
    taken_at: datetime
    note_type: str
    facts: dict[str, Any]
    highlights: dict[str, list[str]]
    content_chars: int = 0  # the size of the text in bytes (an upper bound on characters)


@dataclass(frozen=True, slots=True)
class Subject:
    """How the narrative names the patient."""

    given_name: str
    age: int
    sex: str

    def noun(self, audience: Audience) -> str:
        if audience == "patient":
            return "You"
        if audience == "family":
            return self.given_name
        sex = self.sex if self.sex in ("male", "female") else "patient"
        return f"This {self.age}-year-old {sex}" if sex != "patient" else "The patient"


def _normal(name: str) -> str:
    return " ".join(name.lower().rstrip(".").split())


def citation(note_id: str, fact: dict[str, Any]) -> dict[str, Any]:
    """Where the fact stands in its note: the note, the span and the text there."""
    span = fact.get("span") or {}
    return {
        "note_id": note_id,
        "start": span.get("start", 0),
        "end": span.get("end", 0),
        "text": fact.get("text", ""),
    }


def _cite(
    items: dict[str, dict[str, Any]],
    key: str,
    note_id: str,
    item: dict[str, Any],
    fact: dict[str, Any],
) -> None:
    if key in items:
        if note_id not in items[key]["note_ids"]:
            items[key]["note_ids"].append(note_id)
        items[key]["citations"].append(citation(note_id, fact))
        # The latest mention says best how things are now (doses change).
        items[key].update(item)
    else:
        items[key] = {**item, "note_ids": [note_id], "citations": [citation(note_id, fact)]}


def is_current(diagnosis: dict[str, Any]) -> bool:
    """A problem the patient has now: not denied, possible, resolved or a relative's. Notes
    stored before statuses were read count as current."""
    return diagnosis.get("status", "current") == "current"


def key_information(notes: Sequence[NoteFacts]) -> dict[str, Any]:
    """Diagnoses, medications, allergies and the latest vital signs, each citing its notes.

    `notes` are oldest first; later mentions update earlier ones."""
    diagnoses: dict[str, dict[str, Any]] = {}
    medications: dict[str, dict[str, Any]] = {}
    allergies: dict[str, dict[str, Any]] = {}
    vitals: dict[str, dict[str, Any]] = {}
    no_known_allergies = False
    for note in notes:
        note_id = str(note.id)
        facts = note.facts
        for item in facts.get("diagnoses", ()):
            if is_current(item):
                _cite(diagnoses, _normal(item["name"]), note_id, {"name": item["name"]}, item)
        for item in facts.get("medications", ()):
            _cite(
                medications,
                _normal(item["name"]),
                note_id,
                {
                    "name": item["name"],
                    "dose": item.get("dose"),
                    "route": item.get("route"),
                    "frequency": item.get("frequency"),
                },
                item,
            )
        for item in facts.get("allergies", ()):
            _cite(
                allergies,
                _normal(item["substance"]),
                note_id,
                {"substance": item["substance"], "reaction": item.get("reaction")},
                item,
            )
        no_known_allergies = no_known_allergies or bool(facts.get("no_known_allergies"))
        for item in facts.get("vitals", ()):
            vitals[item["kind"]] = {
                "kind": item["kind"],
                "value": item["value"],
                "value_2": item.get("value_2"),
                "unit": item["unit"],
                "taken_at": note.taken_at.isoformat(),
                "note_ids": [note_id],
                "citations": [citation(note_id, item)],
            }
    return {
        "diagnoses": list(diagnoses.values()),
        "medications": list(medications.values()),
        "allergies": list(allergies.values()),
        "no_known_allergies": no_known_allergies and not allergies,
        "latest_vital_signs": list(vitals.values()),
    }


def _passage(note: NoteFacts, part: str, count: int) -> str:
    return " ".join(note.highlights.get(part, ())[:count])


def _join(names: Sequence[str], limit: int) -> str:
    shown = list(names[:limit])
    if len(names) > limit:
        shown.append(f"{len(names) - limit} more")
    if len(shown) <= 2:
        return " and ".join(shown)
    return ", ".join(shown[:-1]) + f" and {shown[-1]}"


def _date(value: datetime) -> str:
    return value.date().isoformat()


def _medication_text(item: dict[str, Any]) -> str:
    parts = [item["name"], item.get("dose"), item.get("route"), item.get("frequency")]
    return " ".join(part for part in parts if part)


def _vital_text(item: dict[str, Any]) -> str:
    if item.get("value_2") is not None:
        value = f"{item['value']:g}/{item['value_2']:g}"
    else:
        value = f"{item['value']:g}"
    return f"{VITAL_NAMES.get(item['kind'], item['kind'])} {value} {item['unit']}"


def plain_language(text: str) -> str:
    """Clinical terms replaced by everyday words, for family and patients."""

    return _PLAIN_PATTERN.sub(lambda match: PLAIN_WORDS[match.group(0).lower()], text)


def narrative(
    notes: Sequence[NoteFacts],
    key_info: dict[str, Any],
    subject: Subject,
    *,
    audience: Audience,
    length: Length,
) -> str:
    """Why the patient came, what was found, what was done, how they are now, what is planned."""
    if not notes:
        return (
            "There are no notes for this patient yet, so there is nothing to summarise."
            if audience == "clinician"
            else "No notes have been written yet, so there is nothing to summarise."
        )
    first, latest = notes[0], notes[-1]
    per_part = {"brief": 1, "standard": 2, "detailed": 3}[length]
    who = subject.noun(audience)
    parts: list[str] = []

    reason = _passage(first, "reason", 1)
    span = (
        f"{len(notes)} notes from {_date(first.taken_at)} to {_date(latest.taken_at)}"
        if len(notes) > 1
        else f"one {first.note_type} note of {_date(first.taken_at)}"
    )
    parts.append(f"{who} {'have' if audience == 'patient' else 'has'} {span}.")
    if reason:
        parts.append(f"Reason for care: {reason}")

    diagnoses = [item["name"] for item in key_info["diagnoses"]]
    if diagnoses:
        parts.append(f"Problems found: {_join(diagnoses, 3 * per_part)}.")
    if length != "brief":
        results = _passage(latest, "results", per_part)
        if results:
            parts.append(f"Results: {results}")
        medications = [_medication_text(item) for item in key_info["medications"]]
        if medications:
            parts.append(f"Medications: {_join(medications, 3 * per_part)}.")
        procedures = [n for n in notes if n.note_type == "procedure"]
        if procedures:
            dates = _join([_date(n.taken_at) for n in procedures], 5)
            parts.append(f"Procedures were documented on {dates}.")

    if length == "detailed" and len(notes) > 2:
        for note in notes[1:-1][-8:]:
            assessment = _passage(note, "assessment", 1) or _passage(note, "reason", 1)
            if assessment:
                parts.append(f"On {_date(note.taken_at)} ({note.note_type}): {assessment}")

    assessment = _passage(latest, "assessment", per_part)
    if assessment:
        parts.append(f"Latest assessment ({_date(latest.taken_at)}): {assessment}")
    vitals = [_vital_text(item) for item in key_info["latest_vital_signs"]]
    if vitals and length != "brief":
        parts.append(f"Latest vital signs: {_join(vitals, 7)}.")
    plan = _passage(latest, "plan", per_part)
    if plan:
        parts.append(f"Plan: {plan}")
    if key_info["allergies"]:
        allergies = _join([item["substance"] for item in key_info["allergies"]], 5)
        parts.append(f"Allergies: {allergies}.")
    elif key_info["no_known_allergies"]:
        parts.append("No known allergies.")

    text = " ".join(parts)
    return text if audience == "clinician" else plain_language(text)
