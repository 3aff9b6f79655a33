"""Turn parsed CSV rows into one FHIR R4 transaction Bundle.

Every resource is a conditional create keyed by a deterministic identifier, so sending the same
rows again (a retried job, a re-uploaded file) creates nothing twice, and building the same rows
twice gives byte-identical bundles. Within one Bundle each identifier appears once: HAPI rejects
a transaction holding two identical conditional creates.

Choices worth knowing:
- A patient's details come from the first row of that patient in the batch; later rows that
  disagree get a warning. An existing patient on the server is matched, never updated.
- A pair value (`120/80`) goes into `component` when the concept has exactly two components
  (systolic, diastolic). A pair for any other concept, or a single number for a two-component
  concept, cannot be coded as a quantity: it is sent as `valueString`, as written, with a warning.
- A date-time without a time zone is read as UTC: FHIR requires an offset on any time.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from features.csv_ingest.reader import ObservationValue, ParsedRow, Problem
from features.csv_ingest.terminology import Concept, Terminology

# Never change: identifiers derived from it are stored on the FHIR server, and a new namespace
# would make every re-sent row a new resource.
IDENTIFIER_NAMESPACE = uuid.UUID("6f1d2b0e-4c1a-5e7b-9a43-2d8c0f6e1b57")

UCUM = "http://unitsofmeasure.org"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
OBSERVATION_CATEGORY_DISPLAYS = {
    "vital-signs": "Vital Signs",
    "laboratory": "Laboratory",
    "social-history": "Social History",
    "imaging": "Imaging",
    "survey": "Survey",
    "exam": "Exam",
    "therapy": "Therapy",
    "activity": "Activity",
    "procedure": "Procedure",
}
PAIR_DEFAULT_UNIT = "mmHg"

# Units as people write them (casefolded, spaces removed) -> UCUM code. Only unambiguous
# spellings: "M" (molar) would clash with "m" (metre) once casefolded, so it is not here.
UCUM_CODES: dict[str, str] = {
    "kg": "kg", "kgs": "kg", "g": "g", "mg": "mg", "lb": "[lb_av]", "lbs": "[lb_av]",
    "oz": "[oz_av]",
    "m": "m", "cm": "cm", "mm": "mm", "in": "[in_i]", "inch": "[in_i]", "inches": "[in_i]",
    "ft": "[ft_i]",
    "/min": "/min", "bpm": "/min", "beats/min": "/min", "breaths/min": "/min", "/minute": "/min",
    "mmhg": "mm[Hg]", "mm[hg]": "mm[Hg]", "kpa": "kPa",
    "°c": "Cel", "c": "Cel", "cel": "Cel", "degc": "Cel", "celsius": "Cel",
    "°f": "[degF]", "f": "[degF]", "[degf]": "[degF]", "degf": "[degF]", "fahrenheit": "[degF]",
    "%": "%",
    "mg/dl": "mg/dL", "g/dl": "g/dL", "g/l": "g/L", "mg/l": "mg/L", "ng/ml": "ng/mL",
    "pg/ml": "pg/mL", "mmol/l": "mmol/L", "umol/l": "umol/L", "µmol/l": "umol/L",
    "mmol/mol": "mmol/mol", "meq/l": "meq/L", "u/l": "U/L", "iu/l": "[IU]/L",
    "10*3/ul": "10*3/uL", "10^3/ul": "10*3/uL", "k/ul": "10*3/uL", "10*9/l": "10*9/L",
    "10^9/l": "10*9/L", "10*6/ul": "10*6/uL", "10^6/ul": "10*6/uL", "10*12/l": "10*12/L",
    "kg/m2": "kg/m2", "kg/m^2": "kg/m2", "kg/m²": "kg/m2",
    "ml": "mL", "l": "L", "ml/min": "mL/min", "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "s": "s", "ms": "ms", "h": "h",
}  # fmt: skip


@dataclass(slots=True)
class Concepts:
    """The concept of every term in a batch, keyed by the term as written."""

    conditions: dict[str, Concept] = field(default_factory=dict)
    observations: dict[str, Concept] = field(default_factory=dict)


@dataclass(slots=True)
class BuiltBundle:
    bundle: dict[str, Any]
    warnings: list[Problem]
    entry_rows: list[int]  # entry_rows[i]: the CSV row entry i came from


async def resolve_concepts(rows: Sequence[ParsedRow], terminology: Terminology) -> Concepts:
    """Look up each distinct term once, in the order the rows use them."""
    concepts = Concepts()
    for row in rows:
        for term in row.conditions:
            if term not in concepts.conditions:
                concepts.conditions[term] = await terminology.condition(term)
        for item in row.observations:
            if item.name not in concepts.observations:
                concepts.observations[item.name] = await terminology.observation(item.name)
    return concepts


def build_transaction(
    rows: Sequence[ParsedRow],
    concepts: Concepts,
    *,
    patient_system: str,
    identifier_system: str,
    naive_time_zone: tzinfo = UTC,
) -> BuiltBundle:
    builder = _BundleBuilder(concepts, patient_system, identifier_system, naive_time_zone)
    for row in rows:
        builder.add_row(row)
    return BuiltBundle(
        bundle={"resourceType": "Bundle", "type": "transaction", "entry": builder.entries},
        warnings=builder.warnings,
        entry_rows=builder.entry_rows,
    )


def created_count(response_bundle: dict[str, Any]) -> int:
    """How many entries of a transaction-response the server created (not matched)."""
    return sum(
        1
        for entry in response_bundle.get("entry") or []
        if str((entry.get("response") or {}).get("status", "")).startswith("201")
    )


class _BundleBuilder:
    def __init__(
        self, concepts: Concepts, patient_system: str, identifier_system: str, naive: tzinfo
    ) -> None:
        self.concepts = concepts
        self.patient_system = patient_system
        self.identifier_system = identifier_system
        self.naive_time_zone = naive
        self.entries: list[dict[str, Any]] = []
        self.entry_rows: list[int] = []
        self.warnings: list[Problem] = []
        self.patient_rows: dict[str, ParsedRow] = {}
        # Condition and Observation identifier values -> the row that added them.
        self.identifiers: dict[str, int] = {}

    def add_row(self, row: ParsedRow) -> None:
        patient_url = f"urn:uuid:{self._uuid(row.patient_id)}"
        self._add_patient(row, patient_url)
        for term in row.conditions:
            self._add_condition(row, term, patient_url)
        for item in row.observations:
            self._add_observation(row, item, patient_url)

    def _add_patient(self, row: ParsedRow, patient_url: str) -> None:
        first = self.patient_rows.get(row.patient_id)
        if first is not None:
            if _patient_details(first) != _patient_details(row):
                self.warnings.append(
                    _warning(
                        row,
                        None,
                        f"patient {row.patient_id} is also in row {first.row} with other "
                        f"details: the details of row {first.row} were used",
                    )
                )
            return
        self.patient_rows[row.patient_id] = row
        name: dict[str, Any] = {}
        if row.family_name:
            name["family"] = row.family_name
        if row.given_name:
            name["given"] = [row.given_name]
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": self.patient_system, "value": row.patient_id}],
            "name": [name],
        }
        if row.gender:
            patient["gender"] = row.gender
        if row.birth_date:
            patient["birthDate"] = row.birth_date.isoformat()
        self._append(row, patient_url, patient, self.patient_system, row.patient_id)

    def _add_condition(self, row: ParsedRow, term: str, patient_url: str) -> None:
        identifier = str(self._uuid(row.patient_id, "condition", _normalise(term)))
        if identifier in self.identifiers:
            return  # the same condition listed again for this patient: one fact, one resource
        self.identifiers[identifier] = row.row
        concept = self.concepts.conditions[term]
        if not concept.mapped:
            self.warnings.append(_unmapped(row, "conditions", term))
        condition = {
            "resourceType": "Condition",
            "identifier": [{"system": self.identifier_system, "value": identifier}],
            "clinicalStatus": _codeable(CONDITION_CLINICAL, "active", "Active"),
            "verificationStatus": _codeable(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
            "category": [_codeable(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
            "code": concept.to_codeable_concept(),
            "subject": {"reference": patient_url},
        }
        self._append(row, f"urn:uuid:{identifier}", condition, self.identifier_system, identifier)

    def _add_observation(self, row: ParsedRow, item: ObservationValue, patient_url: str) -> None:
        assert row.observation_date is not None  # the reader requires it with observations
        effective = _fhir_date_time(row.observation_date, self.naive_time_zone)
        identifier = str(
            self._uuid(
                row.patient_id,
                "observation",
                _normalise(item.name),
                row.observation_date.isoformat(),
            )
        )
        if (earlier := self.identifiers.get(identifier)) is not None:
            self.warnings.append(
                _warning(
                    row,
                    "observations",
                    f"'{item.name}' on {effective} for patient {row.patient_id} is already in "
                    f"row {earlier}: skipped",
                )
            )
            return
        self.identifiers[identifier] = row.row
        concept = self.concepts.observations[item.name]
        if not concept.mapped:
            self.warnings.append(_unmapped(row, "observations", item.name))
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": [{"system": self.identifier_system, "value": identifier}],
            "status": "final",
        }
        if concept.category:
            display = OBSERVATION_CATEGORY_DISPLAYS.get(concept.category)
            observation["category"] = [_codeable(OBSERVATION_CATEGORY, concept.category, display)]
        observation["code"] = concept.to_codeable_concept()
        observation["subject"] = {"reference": patient_url}
        observation["effectiveDateTime"] = effective
        components = concept.components if len(concept.components) == 2 else ()
        if item.is_pair and components:
            unit = item.unit or PAIR_DEFAULT_UNIT
            observation["component"] = [
                {"code": component.to_codeable_concept(), "valueQuantity": _quantity(value, unit)}
                for component, value in zip(
                    components, (item.systolic, item.diastolic), strict=True
                )
            ]
        elif item.is_pair or components:
            observation["valueString"] = item.text
            expected = "one number" if item.is_pair else "two numbers (like 120/80)"
            self.warnings.append(
                _warning(
                    row,
                    "observations",
                    f"'{item.name}' takes {expected}, not '{item.text}': sent as text",
                )
            )
        else:
            observation["valueQuantity"] = _quantity(item.value, item.unit)
        self._append(row, f"urn:uuid:{identifier}", observation, self.identifier_system, identifier)

    def _append(
        self, row: ParsedRow, full_url: str, resource: dict, system: str, identifier: str
    ) -> None:
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": _identifier_query(system, identifier),
                },
            }
        )
        self.entry_rows.append(row.row)

    def _uuid(self, *parts: str) -> uuid.UUID:
        key = json.dumps([self.patient_system, *parts], ensure_ascii=False)
        return uuid.uuid5(IDENTIFIER_NAMESPACE, key)


def _patient_details(row: ParsedRow) -> tuple:
    return (row.given_name, row.family_name, row.birth_date, row.gender)


def _normalise(term: str) -> str:
    """The same term however it is cased or spaced, so it maps to the same identifier."""
    return " ".join(unicodedata.normalize("NFC", term).casefold().split())


def _identifier_query(system: str, value: str) -> str:
    # FHIR search escapes `\`, `|`, `,` and `$` inside a token with a backslash; then the
    # whole parameter value is percent-encoded for the URL.
    def escaped(text: str) -> str:
        for char in "\\|,$":
            text = text.replace(char, f"\\{char}")
        return text

    return "identifier=" + quote(f"{escaped(system)}|{escaped(value)}", safe="")


def _codeable(system: str, code: str, display: str | None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _quantity(value: Decimal | None, unit: str | None) -> dict[str, Any]:
    assert value is not None
    quantity: dict[str, Any] = {"value": _json_number(value)}
    if unit:
        quantity["unit"] = unit
        code = UCUM_CODES.get("".join(unit.casefold().split()))
        if code:
            quantity["system"] = UCUM
            quantity["code"] = code
    return quantity


def _json_number(value: Decimal) -> int | float:
    # JSON has no decimal type here: an integral value as an int keeps "72" from becoming "72.0".
    return int(value) if value == value.to_integral_value() else float(value)


def _fhir_date_time(value: date | datetime, naive_time_zone: tzinfo) -> str:
    if not isinstance(value, datetime):
        return value.isoformat()
    if value.tzinfo is None:
        value = value.replace(tzinfo=naive_time_zone)
    return value.isoformat().replace("+00:00", "Z")


def _unmapped(row: ParsedRow, column: str, term: str) -> Problem:
    return _warning(row, column, f"no code for '{term}': sent as text only")


def _warning(row: ParsedRow, column: str | None, message: str) -> Problem:
    return Problem(row.row, column, message, "warning")
