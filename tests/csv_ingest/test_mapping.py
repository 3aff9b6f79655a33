"""Parsed CSV rows -> a FHIR R4 transaction Bundle: no database, no network."""

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest

from features.csv_ingest.mapping import (
    UCUM,
    Concepts,
    build_transaction,
    created_count,
    resolve_concepts,
)
from features.csv_ingest.reader import ObservationValue, ParsedRow, read_csv
from features.csv_ingest.terminology import LOINC, SNOMED, BuiltinTerminology, Coding, Concept

PATIENTS = "https://hospital.example/patient-ids"
IDENTIFIERS = "https://hospital.example/csv-ingest"
SAMPLE = Path(__file__).resolve().parents[2] / "seeds" / "sample_patients.csv"

HYPERTENSION = Concept("Hypertension", (Coding(SNOMED, "38341003", "Hypertension"),))
WEIGHT = Concept("Body weight", (Coding(LOINC, "29463-7", "Body weight"),), "vital-signs")
SYSTOLIC = Concept("Systolic", (Coding(LOINC, "8480-6", "Systolic blood pressure"),))
DIASTOLIC = Concept("Diastolic", (Coding(LOINC, "8462-4", "Diastolic blood pressure"),))
BLOOD_PRESSURE = Concept(
    "Blood pressure",
    (Coding(LOINC, "85354-9", "Blood pressure panel"),),
    "vital-signs",
    (SYSTOLIC, DIASTOLIC),
)


class CountingTerminology:
    """Codes a few terms, leaves the rest as text, and counts every lookup."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def condition(self, term: str) -> Concept:
        self.calls.append(("condition", term))
        return HYPERTENSION if term.casefold() == "hypertension" else Concept(term)

    async def observation(self, term: str) -> Concept:
        self.calls.append(("observation", term))
        known = {"body weight": WEIGHT, "blood pressure": BLOOD_PRESSURE}
        return known.get(term.casefold(), Concept(term))

    async def aclose(self) -> None:
        return None


def make_row(
    row: int = 2,
    patient_id: str = "P1",
    *,
    conditions: tuple[str, ...] = (),
    observations: tuple[ObservationValue, ...] = (),
    observation_date: date | datetime | None = date(2024, 5, 1),
    given_name: str | None = "Ann",
) -> ParsedRow:
    return ParsedRow(
        row=row,
        patient_id=patient_id,
        given_name=given_name,
        family_name="Lee",
        birth_date=date(1980, 2, 3),
        gender="female",
        conditions=list(conditions),
        observations=list(observations),
        observation_date=observation_date,
    )


def weight(value: str, unit: str | None = "kg", name: str = "Body weight") -> ObservationValue:
    return ObservationValue(name, Decimal(value), unit)


def pressure(systolic: int, diastolic: int, unit: str | None = "mmHg") -> ObservationValue:
    return ObservationValue("Blood pressure", None, unit, Decimal(systolic), Decimal(diastolic))


async def build(*rows: ParsedRow):
    concepts = await resolve_concepts(rows, CountingTerminology())
    return build_transaction(rows, concepts, patient_system=PATIENTS, identifier_system=IDENTIFIERS)


def resources(built, resource_type: str) -> list[dict]:
    return [
        entry["resource"]
        for entry in built.bundle["entry"]
        if entry["resource"]["resourceType"] == resource_type
    ]


def only(built, resource_type: str) -> dict:
    [resource] = resources(built, resource_type)
    return resource


# --- concepts -----------------------------------------------------------------------------


async def test_each_distinct_term_is_looked_up_once():
    terminology = CountingTerminology()
    rows = [
        make_row(2, "P1", conditions=("Hypertension", "Asthma"), observations=(weight("72"),)),
        make_row(3, "P2", conditions=("Asthma",), observations=(weight("80"), pressure(1, 2))),
    ]
    concepts = await resolve_concepts(rows, terminology)
    assert terminology.calls == [
        ("condition", "Hypertension"),
        ("condition", "Asthma"),
        ("observation", "Body weight"),
        ("observation", "Blood pressure"),
    ]
    assert concepts.conditions["Hypertension"] is HYPERTENSION
    assert concepts.observations["Blood pressure"] is BLOOD_PRESSURE


# --- bundle shape -------------------------------------------------------------------------


async def test_a_row_becomes_a_transaction_of_conditional_creates():
    built = await build(
        make_row(conditions=("Hypertension",), observations=(weight("72"), pressure(120, 80)))
    )
    bundle = built.bundle
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "transaction")
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Patient",
        "Condition",
        "Observation",
        "Observation",
    ]
    assert built.entry_rows == [2, 2, 2, 2]
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert entry["fullUrl"].startswith("urn:uuid:")
        assert request["method"] == "POST"
        assert request["url"] == resource["resourceType"]
        [identifier] = resource["identifier"]
        assert unquote(request["ifNoneExist"]) == (
            f"identifier={identifier['system']}|{identifier['value']}"
        )


async def test_every_reference_resolves_to_an_entry_of_the_bundle():
    built = await build(
        make_row(2, "P1", conditions=("Hypertension",), observations=(weight("72"),)),
        make_row(3, "P2", conditions=("Asthma",), observations=(pressure(120, 80),)),
    )
    full_urls = {entry["fullUrl"] for entry in built.bundle["entry"]}
    assert len(full_urls) == len(built.bundle["entry"])
    patients = {
        entry["resource"]["identifier"][0]["value"]: entry["fullUrl"]
        for entry in built.bundle["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    }
    for resource in resources(built, "Condition") + resources(built, "Observation"):
        assert resource["subject"]["reference"] in full_urls
    assert [c["subject"]["reference"] for c in resources(built, "Condition")] == [
        patients["P1"],
        patients["P2"],
    ]


async def test_the_patient_resource():
    built = await build(make_row())
    patient = only(built, "Patient")
    assert patient == {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENTS, "value": "P1"}],
        "name": [{"family": "Lee", "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1980-02-03",
    }


async def test_a_patient_without_optional_details_has_no_empty_fields():
    row = ParsedRow(2, "P1", None, "Lee", None, None)
    built = build_transaction(
        [row], Concepts(), patient_system=PATIENTS, identifier_system=IDENTIFIERS
    )
    patient = only(built, "Patient")
    assert patient["name"] == [{"family": "Lee"}]
    assert "gender" not in patient
    assert "birthDate" not in patient


async def test_a_formula_given_name_arrives_unchanged_in_the_patient():
    csv = (
        "patient_id,given_name,family_name,birth_date,gender\n"
        'P1,"=HYPERLINK(""http://x"",""y"")",Lee,1980-02-03,f\n'
    )
    rows = list(read_csv(io.BytesIO(csv.encode()), today=date(2024, 6, 1)))
    built = await build(*rows)
    assert only(built, "Patient")["name"][0]["given"] == ['=HYPERLINK("http://x","y")']


async def test_the_condition_resource():
    built = await build(make_row(conditions=("Hypertension",)))
    patient_url = built.bundle["entry"][0]["fullUrl"]
    condition = only(built, "Condition")
    assert condition["clinicalStatus"] == {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active",
                "display": "Active",
            }
        ]
    }
    assert condition["verificationStatus"]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/condition-ver-status"
    )
    assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert condition["category"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
        "code": "problem-list-item",
        "display": "Problem List Item",
    }
    assert condition["code"] == HYPERTENSION.to_codeable_concept()
    assert condition["subject"] == {"reference": patient_url}
    assert condition["identifier"][0]["system"] == IDENTIFIERS
    assert built.warnings == []


async def test_the_observation_resource():
    built = await build(make_row(observations=(weight("72.50"),)))
    observation = only(built, "Observation")
    assert observation["status"] == "final"
    assert observation["category"] == [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                    "display": "Vital Signs",
                }
            ]
        }
    ]
    assert observation["code"] == WEIGHT.to_codeable_concept()
    assert observation["effectiveDateTime"] == "2024-05-01"
    assert observation["valueQuantity"] == {
        "value": 72.5,
        "unit": "kg",
        "system": UCUM,
        "code": "kg",
    }


async def test_an_observation_without_a_category_has_none():
    built = await build(make_row(observations=(weight("3", "score", name="Mood"),)))
    assert "category" not in only(built, "Observation")


# --- one resource per fact ----------------------------------------------------------------


async def test_two_rows_of_one_patient_give_one_patient_and_no_repeated_creates():
    built = await build(
        make_row(2, "P1", conditions=("Hypertension", "Asthma"), observations=(weight("72"),)),
        make_row(
            3,
            "P1",
            conditions=("hypertension", "Diabetes"),
            observations=(weight("71"),),
            observation_date=date(2024, 5, 2),
        ),
    )
    assert len(resources(built, "Patient")) == 1
    queries = [entry["request"]["ifNoneExist"] for entry in built.bundle["entry"]]
    assert len(queries) == len(set(queries))
    conditions = [c["code"].get("text") for c in resources(built, "Condition")]
    assert conditions == ["Hypertension", "Asthma", "Diabetes"]
    assert len(resources(built, "Observation")) == 2
    assert built.entry_rows == [2, 2, 2, 2, 3, 3]


async def test_the_same_observation_twice_on_one_date_is_sent_once_with_a_warning():
    built = await build(
        make_row(2, "P1", observations=(weight("72"),)),
        make_row(3, "P1", observations=(weight("73"),)),
    )
    assert only(built, "Observation")["valueQuantity"]["value"] == 72
    [warning] = built.warnings
    assert (warning.row, warning.column, warning.severity) == (3, "observations", "warning")
    assert "row 2" in warning.message


async def test_a_patient_whose_rows_disagree_keeps_the_first_with_a_warning():
    built = await build(make_row(2, "P1"), make_row(5, "P1", given_name="Anne"))
    assert only(built, "Patient")["name"][0]["given"] == ["Ann"]
    [warning] = built.warnings
    assert (warning.row, warning.severity) == (5, "warning")
    assert "row 2" in warning.message


# --- determinism --------------------------------------------------------------------------


async def test_building_the_same_rows_twice_gives_identical_bytes():
    def rows():
        return [
            make_row(2, "P1", conditions=("Hypertension", "Zorblax"), observations=(weight("72"),)),
            make_row(
                3, "P2", observations=(pressure(120, 80),), observation_date=datetime(2024, 5, 1, 9)
            ),
        ]

    first = json.dumps((await build(*rows())).bundle, sort_keys=False).encode()
    second = json.dumps((await build(*rows())).bundle, sort_keys=False).encode()
    assert first == second


async def test_identifiers_follow_the_patient_the_term_and_the_date():
    def condition_id(built):
        return only(built, "Condition")["identifier"][0]["value"]

    def observation_id(built):
        return only(built, "Observation")["identifier"][0]["value"]

    base = await build(make_row(conditions=("Hypertension",), observations=(weight("72"),)))
    # Case and spacing of a term do not make it another fact; the value does not either.
    respelled = await build(
        make_row(conditions=("  HYPERTENSION ",), observations=(weight("80", name="body  weight"),))
    )
    other_patient = await build(
        make_row(patient_id="P2", conditions=("Hypertension",), observations=(weight("72"),))
    )
    other_day = await build(
        make_row(observations=(weight("72"),), observation_date=date(2024, 5, 2))
    )
    assert condition_id(respelled) == condition_id(base)
    assert observation_id(respelled) == observation_id(base)
    assert condition_id(other_patient) != condition_id(base)
    assert observation_id(other_patient) != observation_id(base)
    assert observation_id(other_day) != observation_id(base)


async def test_the_patient_full_url_depends_on_the_patient_system():
    row = make_row()
    one = build_transaction(
        [row], Concepts(), patient_system=PATIENTS, identifier_system=IDENTIFIERS
    )
    two = build_transaction(
        [row], Concepts(), patient_system="urn:other", identifier_system=IDENTIFIERS
    )
    assert one.bundle["entry"][0]["fullUrl"] != two.bundle["entry"][0]["fullUrl"]


async def test_search_characters_in_an_identifier_are_escaped():
    built = await build(make_row(patient_id="A|B,C$D\\E"))
    query = built.bundle["entry"][0]["request"]["ifNoneExist"]
    assert query.startswith("identifier=")
    assert "|" not in query and "," not in query
    assert unquote(query) == f"identifier={PATIENTS}|A\\|B\\,C\\$D\\\\E"


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "code"),
    [
        ("kg", "kg"),
        ("lb", "[lb_av]"),
        ("lbs", "[lb_av]"),
        ("cm", "cm"),
        ("in", "[in_i]"),
        ("/min", "/min"),
        ("bpm", "/min"),
        ("mmHg", "mm[Hg]"),
        ("mm Hg", "mm[Hg]"),
        ("°C", "Cel"),
        ("C", "Cel"),
        ("°F", "[degF]"),
        ("%", "%"),
        ("mg/dl", "mg/dL"),
        ("mmol/L", "mmol/L"),
        ("g/dL", "g/dL"),
        ("U/L", "U/L"),
        ("10*3/uL", "10*3/uL"),
        ("kg/m2", "kg/m2"),
    ],
)
async def test_common_units_are_coded_in_ucum(unit, code):
    built = await build(make_row(observations=(weight("5", unit),)))
    assert only(built, "Observation")["valueQuantity"] == {
        "value": 5,
        "unit": unit,
        "system": UCUM,
        "code": code,
    }


async def test_an_unknown_unit_is_kept_as_written_without_a_code():
    built = await build(make_row(observations=(weight("2", "handfuls"),)))
    assert only(built, "Observation")["valueQuantity"] == {"value": 2, "unit": "handfuls"}


async def test_a_value_without_unit_is_just_a_number():
    built = await build(make_row(observations=(weight("7", None),)))
    assert only(built, "Observation")["valueQuantity"] == {"value": 7}


@pytest.mark.parametrize(
    ("written", "value"),
    [("72", 72), ("72.0", 72), ("72.50", 72.5), ("-0.25", -0.25), ("+3", 3), ("0.1", 0.1)],
)
async def test_values_are_json_numbers(written, value):
    built = await build(make_row(observations=(weight(written),)))
    sent = only(built, "Observation")["valueQuantity"]["value"]
    assert sent == value
    assert type(sent) is type(value)


async def test_blood_pressure_goes_into_two_components():
    built = await build(make_row(observations=(pressure(120, 80),)))
    observation = only(built, "Observation")
    assert "valueQuantity" not in observation
    assert observation["code"] == BLOOD_PRESSURE.to_codeable_concept()
    assert observation["component"] == [
        {
            "code": SYSTOLIC.to_codeable_concept(),
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
        {
            "code": DIASTOLIC.to_codeable_concept(),
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
        },
    ]
    assert built.warnings == []


async def test_blood_pressure_without_a_unit_is_in_mmhg():
    built = await build(make_row(observations=(pressure(120, 80, unit=None),)))
    [systolic, _] = only(built, "Observation")["component"]
    assert systolic["valueQuantity"]["code"] == "mm[Hg]"


async def test_a_pair_for_a_single_valued_concept_is_sent_as_text_with_a_warning():
    item = ObservationValue("Body weight", None, "kg", Decimal(70), Decimal(72))
    built = await build(make_row(observations=(item,)))
    observation = only(built, "Observation")
    assert observation["valueString"] == "70/72 kg"
    assert "valueQuantity" not in observation and "component" not in observation
    [warning] = built.warnings
    assert (warning.row, warning.column, warning.severity) == (2, "observations", "warning")
    assert "sent as text" in warning.message


async def test_a_single_number_for_blood_pressure_is_sent_as_text_with_a_warning():
    item = ObservationValue("Blood pressure", Decimal(120), "mmHg")
    built = await build(make_row(observations=(item,)))
    observation = only(built, "Observation")
    assert observation["valueString"] == "120 mmHg"
    assert "component" not in observation
    assert "two numbers" in built.warnings[0].message


@pytest.mark.parametrize(
    ("observed", "effective"),
    [
        (date(2024, 5, 1), "2024-05-01"),
        (datetime(2024, 5, 1, 9, 30, tzinfo=UTC), "2024-05-01T09:30:00Z"),
        (
            datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T09:30:00+02:00",
        ),
        # FHIR requires a zone with any time: a time written without one is read as UTC.
        (datetime(2024, 5, 1, 9, 30), "2024-05-01T09:30:00Z"),
    ],
)
async def test_effective_date_time(observed, effective):
    built = await build(make_row(observations=(weight("72"),), observation_date=observed))
    assert only(built, "Observation")["effectiveDateTime"] == effective


# --- unmapped terms -----------------------------------------------------------------------


async def test_unmapped_terms_are_text_only_with_a_warning_each():
    built = await build(
        make_row(4, conditions=("Zorblax syndrome",), observations=(weight("3", None, "Glow"),))
    )
    assert only(built, "Condition")["code"] == {"text": "Zorblax syndrome"}
    assert only(built, "Observation")["code"] == {"text": "Glow"}
    assert [w.to_dict() for w in built.warnings] == [
        {
            "row": 4,
            "column": "conditions",
            "message": "no code for 'Zorblax syndrome': sent as text only",
            "severity": "warning",
        },
        {
            "row": 4,
            "column": "observations",
            "message": "no code for 'Glow': sent as text only",
            "severity": "warning",
        },
    ]


async def test_the_sample_file_maps_with_one_unmapped_term():
    with SAMPLE.open("rb") as stream:
        rows = list(read_csv(stream))
    terminology = BuiltinTerminology()
    concepts = await resolve_concepts(rows, terminology)
    built = build_transaction(
        rows, concepts, patient_system=PATIENTS, identifier_system=IDENTIFIERS
    )
    assert [w.message for w in built.warnings] == [
        "no code for 'Zorblax syndrome': sent as text only"
    ]
    assert len(resources(built, "Patient")) == len(rows)
    assert len(built.entry_rows) == len(built.bundle["entry"])
    pressures = [o for o in resources(built, "Observation") if "component" in o]
    assert pressures and all(len(o["component"]) == 2 for o in pressures)


# --- responses ----------------------------------------------------------------------------


def test_created_count_counts_201_responses_only():
    response = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "201 Created"}},
            {"response": {"status": "200 OK"}},
            {"response": {"status": "201"}},
            {"response": {}},
            {},
        ],
    }
    assert created_count(response) == 2
    assert created_count({"resourceType": "Bundle"}) == 0
