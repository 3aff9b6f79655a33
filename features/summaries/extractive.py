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
    "chf": "heart failure",
    "htn": "high blood pressure",
    "cad": "heart artery disease",
    "dm": "diabetes",
    "t2dm": "type 2 diabetes",
    "afib": "an irregular heartbeat",
    "uti": "a urine infection",
    "ckd": "long-term kidney disease",
    "mi": "heart attack",
    "cva": "stroke",
    "oa": "joint wear-and-tear arthritis",
    "bp": "blood pressure",
    "hr": "heart rate",
    "mri": "scan (MRI)",
    "ct": "scan (CT)",
    "ekg": "heart tracing (EKG)",
    "ecg": "heart tracing (ECG)",
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


def _merge_medication(
    medications: dict[str, dict[str, Any]], note_id: str, fact: dict[str, Any]
) -> None:
    """The drug as the latest note that says something of it has it, and what changed: a
    later mention without a dose keeps the dose, and another dose is a change."""
    key = _normal(fact["name"])
    said = {
        "name": fact["name"],
        "brand": fact.get("brand"),
        "dose": fact.get("dose"),
        "route": fact.get("route"),
        "frequency": fact.get("frequency"),
        "change": fact.get("change"),
        "previous_dose": fact.get("previous_dose"),
    }
    earlier = medications.get(key)
    if earlier is not None and said["change"] is None:
        dose, before = said["dose"], earlier.get("dose")
        if dose and before and _normal(dose) != _normal(before):
            said["change"], said["previous_dose"] = "changed", before
    _cite(medications, key, note_id, {k: v for k, v in said.items() if v is not None}, fact)
    for name, value in said.items():
        medications[key].setdefault(name, value)


def _plan_items(note: NoteFacts) -> list[dict[str, Any]]:
    """The note's plan as items, each citing its place in the note."""
    note_id = str(note.id)
    return [
        {
            "text": item["text"],
            "taken_at": note.taken_at.isoformat(),
            "note_ids": [note_id],
            "citations": [citation(note_id, item)],
        }
        for item in note.facts.get("plan", ())
        if item.get("text")
    ]


def key_information(notes: Sequence[NoteFacts]) -> dict[str, Any]:
    """Current and past problems, medications, allergies, the latest vital signs and the most
    recent plan, each citing the notes (and the spans in them) it comes from.

    `notes` are oldest first; later mentions update earlier ones."""
    diagnoses: dict[str, dict[str, Any]] = {}
    past: dict[str, dict[str, Any]] = {}
    medications: dict[str, dict[str, Any]] = {}
    allergies: dict[str, dict[str, Any]] = {}
    vitals: dict[str, dict[str, Any]] = {}
    plan: list[dict[str, Any]] = []
    no_known_allergies = False
    for note in notes:
        note_id = str(note.id)
        facts = note.facts
        for item in facts.get("diagnoses", ()):
            status = item.get("status", "current")
            if status in ("current", "historical"):
                kept = diagnoses if status == "current" else past
                _cite(
                    kept,
                    _normal(item["name"]),
                    note_id,
                    {"name": item["name"], "status": status},
                    item,
                )
        for item in facts.get("medications", ()):
            _merge_medication(medications, note_id, item)
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
        plan = _plan_items(note) or plan
    for key in diagnoses:  # a problem current in any note is not a past one
        past.pop(key, None)
    return {
        "diagnoses": list(diagnoses.values()),
        "past_problems": list(past.values()),
        "medications": list(medications.values()),
        "allergies": list(allergies.values()),
        "no_known_allergies": no_known_allergies and not allergies,
        "latest_vital_signs": list(vitals.values()),
        "plan": plan,
    }


def _join(names: Sequence[str], limit: int) -> str:
    shown = list(names[:limit])
    if len(names) > limit:
        shown.append(f"{len(names) - limit} more")
    if len(shown) <= 2:
        return " and ".join(shown)
    return ", ".join(shown[:-1]) + f" and {shown[-1]}"


def _date(value: datetime | str) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else value[:10]


CHANGE_WORDS = {
    "started": "new",
    "increased": "increased",
    "decreased": "decreased",
    "stopped": "stopped",
    "changed": "dose changed",
}


def _medication_text(item: dict[str, Any], plain: bool) -> str:
    route = item.get("route")
    if plain and route == "oral":
        route = "by mouth"
    dose = _plain_units(item.get("dose")) if plain else item.get("dose")
    text = " ".join(part for part in (item["name"], dose, route, item.get("frequency")) if part)
    change = CHANGE_WORDS.get(item.get("change") or "")
    if change and item.get("previous_dose") and change != "stopped":
        before = item["previous_dose"]
        text += f" ({change} from {_plain_units(before) if plain else before})"
    elif change:
        text += f" ({change})"
    return text


_UNIT_WORDS = {
    "mg": "milligrams",
    "mcg": "micrograms",
    "g": "grams",
    "mL": "millilitres",
    "IU": "units",
    "mEq": "milliequivalents",
}


def _plain_units(dose: str | None) -> str | None:
    if dose is None:
        return None
    return " ".join(_UNIT_WORDS.get(word, word) for word in dose.split())


def _vital_text(item: dict[str, Any], plain: bool) -> str:
    value = f"{item['value']:g}"
    unit = item["unit"]
    if item.get("value_2") is not None:
        value = f"{value} over {item['value_2']:g}" if plain else f"{value}/{item['value_2']:g}"
    if plain:
        unit = PLAIN_UNITS.get(unit, unit)
    return f"{VITAL_NAMES.get(item['kind'], item['kind'])} {value} {unit}".rstrip()


PLAIN_UNITS = {
    "mmHg": "",
    "bpm": "beats a minute",
    "breaths/min": "breaths a minute",
    "%": "percent",
    "°F": "degrees Fahrenheit",
    "°C": "degrees Celsius",
    "lb": "pounds",
    "kg": "kilograms",
    "in": "inches",
    "cm": "centimetres",
}


def plain_language(text: str) -> str:
    """Clinical terms replaced by everyday words, for family and patients."""

    return _PLAIN_PATTERN.sub(lambda match: PLAIN_WORDS[match.group(0).lower()], text)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


# How many items of each kind each length names.
LIMITS = {
    "brief": {"problems": 3, "medications": 3, "vitals": 0, "plan": 1, "past": 0},
    "standard": {"problems": 6, "medications": 6, "vitals": 7, "plan": 3, "past": 3},
    "detailed": {"problems": 12, "medications": 12, "vitals": 7, "plan": 8, "past": 8},
}


def narrative(
    notes: Sequence[NoteFacts],
    key_info: dict[str, Any],
    subject: Subject,
    *,
    audience: Audience,
    length: Length,
) -> str:
    """A handover in short sentences built from the key information: who, the problems, the
    allergies, the medications and what changed, the latest vital signs, the recent plan.
    Nothing is cut from the middle of a note: the only words taken from a note are whole plan
    items and the chief complaint."""
    if not notes:
        return (
            "There are no notes for this patient yet, so there is nothing to summarise."
            if audience == "clinician"
            else "No notes have been written yet, so there is nothing to summarise."
        )
    plain = audience != "clinician"
    limit = LIMITS[length]
    first, latest = notes[0], notes[-1]
    who = subject.noun(audience)
    has = "have" if audience == "patient" else "has"
    span = (
        f"{len(notes)} notes from {_date(first.taken_at)} to {_date(latest.taken_at)}"
        if len(notes) > 1
        else f"one {first.note_type} note of {_date(first.taken_at)}"
    )
    parts = [f"{who} {has} {span}."]
    reason = _chief_complaint(latest)
    if reason:
        parts.append(f"Latest visit: {_sentence(reason)}")

    problems = [item["name"] for item in key_info["diagnoses"]]
    parts.append(
        f"Current problems: {_join(problems, limit['problems'])}."
        if problems
        else "No current problem is recorded."
    )
    past = [item["name"] for item in key_info.get("past_problems", ())]
    if past and limit["past"]:
        parts.append(f"Past history: {_join(past, limit['past'])}.")
    if key_info["allergies"]:
        allergies = [
            f"{item['substance']} ({item['reaction']})"
            if item.get("reaction")
            else item["substance"]
            for item in key_info["allergies"]
        ]
        parts.append(f"Allergies: {_join(allergies, 10)}.")
    elif key_info["no_known_allergies"]:
        parts.append("No known allergies.")
    else:
        parts.append("No allergy is recorded.")
    medications = [_medication_text(item, plain) for item in key_info["medications"]]
    if medications:
        parts.append(f"Medications: {_join(medications, limit['medications'])}.")
    vitals = [_vital_text(item, plain) for item in key_info["latest_vital_signs"]]
    if vitals and limit["vitals"]:
        taken = max(item["taken_at"] for item in key_info["latest_vital_signs"])
        parts.append(f"Latest vital signs ({_date(taken)}): {_join(vitals, limit['vitals'])}.")
    plan = [item["text"].rstrip(" .;") for item in key_info.get("plan", ())]
    if plan:
        shown = plan[: limit["plan"]]
        more = f" ({len(plan) - len(shown)} more in the note)" if len(plan) > len(shown) else ""
        parts.append(f"Plan: {'; '.join(shown)}{more}.")

    text = " ".join(parts)
    return text if audience == "clinician" else plain_language(text)


def _chief_complaint(note: NoteFacts) -> str | None:
    """The chief complaint when the note states one in a few words."""
    reason = " ".join(note.highlights.get("reason", ())[:1]).strip()
    return reason if reason and len(reason.split()) <= 15 else None
