"""Coding CSV terms: the built-in table (its codes checked for syntax and against Synthea's
codings) and the terminology-server client against a FHIR terminology double over real HTTP."""

import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.clients.fhir import FHIRClient
from features.csv_ingest.terminology import (
    BUILTIN_TABLE,
    CONDITIONS,
    LOCAL_TERMS_SYSTEM,
    LOINC,
    OBSERVATIONS,
    SNOMED,
    SOURCES,
    BuiltinTerminology,
    Coding,
    Concept,
    TableEntry,
    TerminologyServer,
    TerminologyUnavailable,
    build_index,
    normalise_term,
    terminology_from_settings,
)
from tests.doubles.terminology_server import CodeSystemConcept, Mapping, TerminologyDouble

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea"
builtin = BuiltinTerminology()


# --- code syntax -----------------------------------------------------------------------------

# The Verhoeff dihedral-group tables; SNOMED CT identifiers end in a Verhoeff check digit.
_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(number: str) -> bool:
    check = 0
    for position, digit in enumerate(reversed(number)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(digit)]]
    return check == 0


def snomed_concept_id_valid(code: str) -> bool:
    """6 to 18 digits, no leading zero, a concept's partition (00 core, 10 extension: not a
    description or relationship id), and a valid Verhoeff check digit."""
    return (
        re.fullmatch(r"[1-9]\d{5,17}", code) is not None
        and code[-3:-1] in ("00", "10")
        and verhoeff_valid(code)
    )


def loinc_valid(code: str) -> bool:
    """`\\d{1,5}-\\d` whose last digit is LOINC's mod 10 check digit: from the right, every
    other digit of the number (the rightmost first) is doubled, all digits are summed, and the
    check digit brings the sum to a multiple of ten."""
    if re.fullmatch(r"\d{1,5}-\d", code) is None:
        return False
    number, check = code.split("-")
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit // 10 + digit % 10
    return (10 - total % 10) % 10 == int(check)


def all_codings(table: Iterable[TableEntry]) -> Iterator[tuple[TableEntry, Coding]]:
    for entry in table:
        for coding in entry.codings:
            yield entry, coding
        yield from all_codings(entry.components)


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("38341003", True),
        ("22298006", True),
        ("428191000124101", True),  # an extension concept id (partition 10)
        ("38341004", False),  # a wrong check digit
        ("38341030", False),  # two digits swapped
        ("750827015", False),  # a description id (partition 01), not a concept
        ("0038341003", False),
        ("3834100", False),  # too short
        ("8867-4", False),
    ],
)
def test_snomed_check_catches_bad_ids(code: str, valid: bool) -> None:
    assert snomed_concept_id_valid(code) is valid


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("8867-4", True),
        ("29463-7", True),
        ("718-7", True),
        ("85354-9", True),
        ("8867-5", False),  # a wrong check digit
        ("8876-4", False),  # two digits swapped
        ("29463", False),
        ("123456-7", False),
        ("38341003", False),
    ],
)
def test_loinc_check_catches_bad_codes(code: str, valid: bool) -> None:
    assert loinc_valid(code) is valid


def test_every_code_in_the_table_is_well_formed() -> None:
    bad = [
        (coding.system, coding.code)
        for _, coding in all_codings(BUILTIN_TABLE)
        if not (snomed_concept_id_valid if coding.system == SNOMED else loinc_valid)(coding.code)
    ]
    assert bad == []
    assert {coding.system for _, coding in all_codings(BUILTIN_TABLE)} == {SNOMED, LOINC}


def test_every_coding_has_a_display_without_semantic_tag() -> None:
    tagged = [
        coding.display
        for _, coding in all_codings(BUILTIN_TABLE)
        if not coding.display
        or re.search(r"\((disorder|finding|observable entity)\)", coding.display)
    ]
    assert tagged == []


# --- the table -------------------------------------------------------------------------------


def test_table_holds_at_least_sixty_common_concepts() -> None:
    assert len(BUILTIN_TABLE) >= 60
    assert len(CONDITIONS) >= 30
    assert len(OBSERVATIONS) >= 25
    assert {entry.kind for entry in CONDITIONS} == {"condition"}
    assert {entry.kind for entry in OBSERVATIONS} == {"observation"}


def test_every_entry_names_its_checked_source() -> None:
    unsourced = [entry.names[0] for entry in BUILTIN_TABLE if not entry.sources]
    unknown = [
        (entry.names[0], source)
        for entry in BUILTIN_TABLE
        for source in entry.sources
        if source not in SOURCES
    ]
    assert unsourced == []
    assert unknown == []


def test_conditions_are_snomed_and_observations_have_a_category_and_loinc() -> None:
    for entry in CONDITIONS:
        assert [c.system for c in entry.codings] == [SNOMED], entry.names[0]
        assert entry.category is None
    for entry in OBSERVATIONS:
        assert entry.category in ("vital-signs", "laboratory", "social-history"), entry.names[0]
        assert entry.codings[0].system == LOINC, entry.names[0]


def test_no_two_entries_claim_the_same_name() -> None:
    claims = Counter(
        name for entry in BUILTIN_TABLE for name in {normalise_term(n) for n in entry.names}
    )
    assert [name for name, count in claims.items() if count > 1] == []


def test_no_code_is_in_two_entries() -> None:
    codes = Counter((c.system, c.code) for entry in BUILTIN_TABLE for c in entry.codings)
    assert [code for code, count in codes.items() if count > 1] == []


def test_an_index_refuses_a_name_claimed_twice() -> None:
    first = TableEntry("condition", (Coding(SNOMED, "38341003", "Hypertension"),), ("HTN",), ())
    second = TableEntry("condition", (Coding(SNOMED, "22298006", "MI"),), ("htn ",), ())
    with pytest.raises(ValueError, match="htn"):
        build_index([first, second])
    with pytest.raises(ValueError, match="htn"):
        BuiltinTerminology([first, second])


# --- Synthea agrees with the table -----------------------------------------------------------

_SEMANTIC_TAG = re.compile(r"\s*\((?:[a-z]+[ /]?)+\)\s*$")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", normalise_term(_SEMANTIC_TAG.sub("", text))))


def meaning_mismatches(
    table: Iterable[TableEntry], codings: Iterable[tuple[str, str, str]]
) -> tuple[list[tuple[str, str, str]], int]:
    """Codings (system, code, display) whose code the table holds under another meaning: some
    word of the display is in none of the entry's names or displays. And how many were compared."""
    by_code: dict[tuple[str, str], TableEntry] = {}
    for entry, coding in all_codings(table):
        by_code[coding.system, coding.code] = entry
    mismatches, compared = [], 0
    for system, code, display in codings:
        entry = by_code.get((system, code))
        if entry is None or not display:
            continue
        compared += 1
        known = set().union(
            *(words(n) for n in entry.names + tuple(c.display for c in entry.codings))
        )
        if not words(display) <= known:
            mismatches.append((system, code, display))
    return mismatches, compared


def synthea_codings() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("system") in (SNOMED, LOINC) and isinstance(node.get("code"), str):
                found.add((node["system"], node["code"], node.get("display") or ""))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(SYNTHEA.glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return found


def test_table_codes_mean_in_synthea_what_they_mean_here() -> None:
    if not SYNTHEA.is_dir() or not any(SYNTHEA.glob("*.json")):
        pytest.skip(f"no Synthea bundles at {SYNTHEA} (shared/data/synthea) to compare with")
    mismatches, compared = meaning_mismatches(BUILTIN_TABLE, synthea_codings())
    assert mismatches == []
    assert compared >= 20  # the bundles share a good part of the table: this compares something


def test_the_synthea_comparison_catches_a_swapped_code() -> None:
    ldl = next(e for e in OBSERVATIONS if e.codings[0].code == "18262-6")
    hdl = next(e for e in OBSERVATIONS if e.codings[0].code == "2085-9")
    swapped = TableEntry("observation", hdl.codings, ldl.names, ldl.sources, "laboratory")
    synthea = [(LOINC, "2085-9", "High Density Lipoprotein Cholesterol")]
    assert meaning_mismatches([hdl], synthea) == ([], 1)
    assert meaning_mismatches([swapped], synthea) == (synthea, 1)
    assert meaning_mismatches(
        CONDITIONS, [(SNOMED, "38341003", "Myocardial infarction (disorder)")]
    ) == ([(SNOMED, "38341003", "Myocardial infarction (disorder)")], 1)


# --- looking terms up ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "code"),
    [
        ("Hypertension", "38341003"),
        ("high blood pressure", "38341003"),
        ("HTN", "38341003"),
        ("Type 2 diabetes mellitus", "44054006"),
        ("T2DM", "44054006"),
        ("diabetes mellitus type 2", "44054006"),
        ("Type 1 diabetes", "46635009"),
        ("COPD", "13645005"),
        ("Asthma", "195967001"),
        ("Alzheimer\u2019s disease", "26929004"),
        ("hyperlipidaemia", "55822004"),
    ],
)
async def test_condition_aliases(term: str, code: str) -> None:
    concept = await builtin.condition(term)
    assert concept.mapped
    assert [(c.system, c.code) for c in concept.codings] == [(SNOMED, code)]
    assert concept.text == term
    assert concept.category is None


@pytest.mark.parametrize(
    ("term", "loinc", "snomed", "category"),
    [
        ("Body weight", "29463-7", "27113001", "vital-signs"),
        ("weight", "29463-7", "27113001", "vital-signs"),
        ("Heart rate", "8867-4", "364075005", "vital-signs"),
        ("pulse", "8867-4", "364075005", "vital-signs"),
        ("HR", "8867-4", "364075005", "vital-signs"),
        ("SpO2", "2708-6", "431314004", "vital-signs"),
        ("oxygen saturation", "2708-6", "431314004", "vital-signs"),
        ("temperature", "8310-5", "386725007", "vital-signs"),
        ("body temperature", "8310-5", "386725007", "vital-signs"),
        ("BMI", "39156-5", "60621009", "vital-signs"),
        ("Hemoglobin A1c", "4548-4", None, "laboratory"),
        ("HbA1c", "4548-4", None, "laboratory"),
        ("LDL", "2089-1", None, "laboratory"),
        ("eGFR", "33914-3", None, "laboratory"),
        ("smoking status", "72166-2", None, "social-history"),
    ],
)
async def test_observation_aliases(
    term: str, loinc: str, snomed: str | None, category: str
) -> None:
    concept = await builtin.observation(term)
    codes = {(c.system, c.code) for c in concept.codings}
    assert (LOINC, loinc) in codes
    if snomed:
        assert (SNOMED, snomed) in codes
    assert concept.category == category


async def test_blood_pressure_has_systolic_and_diastolic_components() -> None:
    for term in ("Blood pressure", "BP"):
        concept = await builtin.observation(term)
        assert concept.codings[0] == Coding(
            LOINC, "85354-9", "Blood pressure panel with all children optional"
        )
        assert [c.text for c in concept.components] == [
            "Systolic blood pressure",
            "Diastolic blood pressure",
        ]
        systolic, diastolic = concept.components
        assert {(c.system, c.code) for c in systolic.codings} == {
            (LOINC, "8480-6"),
            (SNOMED, "271649006"),
        }
        assert {(c.system, c.code) for c in diastolic.codings} == {
            (LOINC, "8462-4"),
            (SNOMED, "271650006"),
        }
        assert systolic.category == diastolic.category == "vital-signs"


async def test_an_unmapped_term_is_text_only() -> None:
    concept = await builtin.condition("  Grumpy toe syndrome ")
    assert concept == Concept("Grumpy toe syndrome")
    assert concept.mapped is False
    assert concept.to_codeable_concept() == {"text": "Grumpy toe syndrome"}


async def test_a_condition_is_not_found_among_observations_nor_the_reverse() -> None:
    assert not (await builtin.condition("Body weight")).mapped
    assert not (await builtin.observation("Hypertension")).mapped


@pytest.mark.parametrize(
    "term",
    [
        "hypertension",
        "HYPERTENSION",
        "  Hypertension  ",
        "Hypertension.",
        "- hypertension;",
        "\u00a0HTN\u00a0",
        "HTN\u200b",
        "high   blood\tpressure",
    ],
)
async def test_case_whitespace_and_edge_punctuation_do_not_matter(term: str) -> None:
    concept = await builtin.condition(term)
    assert [c.code for c in concept.codings] == ["38341003"]
    assert concept.text == term.strip()


def test_normalise_term() -> None:
    assert normalise_term("  Type   2\tDiabetes  Mellitus. ") == "type 2 diabetes mellitus"
    assert normalise_term("\u201cBP\u201d") == "bp"
    assert normalise_term("LDL (calculated)") == "ldl (calculated)"
    assert normalise_term("Stra\u00dfe") == "strasse"
    assert normalise_term(" .,- ") == ""


def test_codeable_concept_of_a_mapped_term() -> None:
    concept = Concept("HTN", (Coding(SNOMED, "38341003", "Hypertension"),))
    assert concept.to_codeable_concept() == {
        "coding": [{"system": SNOMED, "code": "38341003", "display": "Hypertension"}],
        "text": "HTN",
    }
    assert Coding(LOINC, "8867-4", "").to_fhir() == {"system": LOINC, "code": "8867-4"}


async def test_terminology_from_settings_picks_the_server_only_when_configured() -> None:
    assert isinstance(terminology_from_settings(SimpleNamespace()), BuiltinTerminology)
    assert isinstance(
        terminology_from_settings(SimpleNamespace(terminology_url=None)), BuiltinTerminology
    )
    server = terminology_from_settings(
        SimpleNamespace(terminology_url="http://127.0.0.1:9/fhir", terminology_timeout_s=3.5)
    )
    try:
        assert isinstance(server, TerminologyServer)
        assert server.base_url == "http://127.0.0.1:9/fhir"
        assert server.timeout_s == 3.5
    finally:
        await server.aclose()


# --- the terminology server ------------------------------------------------------------------

# Displays the server's CodeSystems give; $translate's own displays differ, so a test can tell
# which one the client used.
HYPERTENSION_DISPLAY = "Hypertensive disorder, systemic arterial"


@pytest.fixture
def tx() -> Iterator[TerminologyDouble]:
    mappings = [
        Mapping("hypertension", SNOMED, "38341003", display="HT (translate)"),
        Mapping("heart rate", LOINC, "8867-4", display="HR (translate)"),
        Mapping("heart rate", SNOMED, "364075005"),
        Mapping("ferritin", LOINC, "2276-4"),
        Mapping("blood pressure", LOINC, "85354-9"),
        Mapping("blood pressure", SNOMED, "75367002"),
        Mapping("grumpy toe syndrome", SNOMED, "22298006", equivalence="disjoint"),
        Mapping("sore leg", SNOMED, "22298006", equivalence="relatedto"),
        Mapping("diabetic", SNOMED, "44054006", equivalence="narrower"),
        Mapping("sugar diabetes", SNOMED, "73211009", equivalence="wider"),
        Mapping("sugar diabetes", SNOMED, "44054006", equivalence="inexact"),
        Mapping("unlisted display", SNOMED, "15777000", display="Prediabetes (translate)"),
    ]
    concepts = [
        CodeSystemConcept(SNOMED, "38341003", HYPERTENSION_DISPLAY),
        CodeSystemConcept(SNOMED, "364075005", "Heart rate (observable entity)"),
        CodeSystemConcept(LOINC, "8867-4", "Heart rate", {"CLASSTYPE": "2"}),
        CodeSystemConcept(
            LOINC, "2276-4", "Ferritin [Mass/volume] in Serum or Plasma", {"CLASSTYPE": "1"}
        ),
        CodeSystemConcept(LOINC, "85354-9", "Blood pressure panel with all children optional"),
        CodeSystemConcept(SNOMED, "75367002", "Blood pressure (observable entity)"),
        CodeSystemConcept(SNOMED, "73211009", "Diabetes mellitus"),
    ]
    with TerminologyDouble(mappings, concepts) as double:
        yield double


def codes(concept: Concept) -> list[tuple[str, str, str]]:
    return [(c.system, c.code, c.display) for c in concept.codings]


async def test_server_codes_a_condition_with_the_display_lookup_gives(
    tx: TerminologyDouble,
) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition(" Hypertension ")
    finally:
        await server.aclose()
    assert concept.text == "Hypertension"
    assert codes(concept) == [(SNOMED, "38341003", HYPERTENSION_DISPLAY)]
    assert concept.category is None
    translate, lookup = tx.requests
    assert translate.path == "/fhir/ConceptMap/$translate"
    assert translate.params == {
        "system": LOCAL_TERMS_SYSTEM,
        "code": "hypertension",
        "targetsystem": SNOMED,
    }
    assert lookup.path == "/fhir/CodeSystem/$lookup"
    assert lookup.params == {"system": SNOMED, "code": "38341003"}
    assert all(r.headers["accept"] == "application/fhir+json" for r in tx.requests)


async def test_server_codes_an_observation_in_loinc_and_snomed(tx: TerminologyDouble) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        heart_rate = await server.observation("Heart rate")
        ferritin = await server.observation("Ferritin")
        pressure = await server.observation("Blood pressure")
    finally:
        await server.aclose()
    assert codes(heart_rate) == [
        (LOINC, "8867-4", "Heart rate"),
        (SNOMED, "364075005", "Heart rate (observable entity)"),
    ]
    assert heart_rate.category == "vital-signs"  # the built-in table knows the term
    assert codes(ferritin) == [(LOINC, "2276-4", "Ferritin [Mass/volume] in Serum or Plasma")]
    assert ferritin.category == "laboratory"  # LOINC's CLASSTYPE 1
    assert pressure.category == "vital-signs"
    assert [c.text for c in pressure.components] == [
        "Systolic blood pressure",
        "Diastolic blood pressure",
    ]
    assert {r.params["targetsystem"] for r in tx.requests_to("$translate")} == {SNOMED, LOINC}


async def test_server_keeps_translates_display_when_lookup_does_not_know_the_code(
    tx: TerminologyDouble,
) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition("unlisted display")
    finally:
        await server.aclose()
    assert codes(concept) == [(SNOMED, "15777000", "Prediabetes (translate)")]


async def test_server_leaves_an_unknown_term_unmapped(tx: TerminologyDouble) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition("Unheard-of syndrome")
        observation = await server.observation("Unheard-of level")
    finally:
        await server.aclose()
    assert concept == Concept("Unheard-of syndrome")
    assert concept.to_codeable_concept() == {"text": "Unheard-of syndrome"}
    assert observation == Concept("Unheard-of level")
    assert tx.requests_to("$lookup") == []


@pytest.mark.parametrize("term", ["grumpy toe syndrome", "sore leg", "diabetic"])
async def test_server_codes_nothing_from_a_disjoint_vague_or_narrower_match(
    tx: TerminologyDouble, term: str
) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition(term)
    finally:
        await server.aclose()
    assert not concept.mapped


async def test_server_takes_a_wider_match_over_an_inexact_one(tx: TerminologyDouble) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition("Sugar diabetes")
    finally:
        await server.aclose()
    assert codes(concept) == [(SNOMED, "73211009", "Diabetes mellitus")]


async def test_server_answers_are_cached(tx: TerminologyDouble) -> None:
    server = TerminologyServer(tx.base_url)
    try:
        first = await server.condition("Hypertension")
        asked = tx.request_count
        again = await server.condition("  HYPERTENSION.")
        unknown = await server.condition("Unheard-of syndrome")
        asked_with_unknown = tx.request_count
        unknown_again = await server.condition("unheard-of syndrome")
    finally:
        await server.aclose()
    assert asked == 2
    assert tx.request_count == asked_with_unknown == 3  # "no code" is an answer too
    assert codes(again) == codes(first)
    assert again.text == "HYPERTENSION."
    assert unknown_again == Concept("unheard-of syndrome") and not unknown.mapped


async def test_server_retries_a_503(tx: TerminologyDouble) -> None:
    tx.fail_with(503, times=1)
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition("Hypertension")
    finally:
        await server.aclose()
    assert codes(concept) == [(SNOMED, "38341003", HYPERTENSION_DISPLAY)]
    assert tx.request_count == 3  # the failed $translate, its retry, the $lookup


async def test_server_honours_a_short_retry_after(tx: TerminologyDouble) -> None:
    tx.fail_with(429, times=1, retry_after="0.3")
    server = TerminologyServer(tx.base_url)
    started = time.monotonic()
    try:
        concept = await server.condition("Hypertension")
    finally:
        await server.aclose()
    assert concept.mapped
    assert time.monotonic() - started >= 0.3


async def test_server_that_stays_down_raises_unavailable(tx: TerminologyDouble) -> None:
    tx.fail_with(503)
    server = TerminologyServer(tx.base_url)
    try:
        with pytest.raises(TerminologyUnavailable) as raised:
            await server.condition("Hypertension")
        assert "503" in raised.value.reason
        assert tx.request_count == 3  # one try and two retries
        tx.fail_with(503, times=0)
        assert (await server.condition("Hypertension")).mapped  # a failure is not cached
    finally:
        await server.aclose()


@pytest.mark.parametrize("status", [500, 401])
async def test_server_errors_that_retrying_cannot_fix_raise_at_once(
    tx: TerminologyDouble, status: int
) -> None:
    tx.fail_with(status)
    server = TerminologyServer(tx.base_url)
    try:
        with pytest.raises(TerminologyUnavailable, match=str(status)):
            await server.observation("Heart rate")
    finally:
        await server.aclose()
    assert tx.request_count == 1


async def test_server_404_on_translate_means_unmapped(tx: TerminologyDouble) -> None:
    tx.fail_with(404, times=1)
    server = TerminologyServer(tx.base_url)
    try:
        concept = await server.condition("Hypertension")
    finally:
        await server.aclose()
    assert concept == Concept("Hypertension")


async def test_server_too_slow_raises_unavailable(tx: TerminologyDouble) -> None:
    tx.delay(2.0)
    server = TerminologyServer(tx.base_url, timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TerminologyUnavailable, match="in time"):
            await server.condition("Hypertension")
    finally:
        await server.aclose()
    assert time.monotonic() - started < 1.5


async def test_a_dead_port_raises_unavailable_quickly() -> None:
    with TerminologyDouble() as double:
        dead_url = double.base_url  # the port is free again once the double stops
    server = TerminologyServer(dead_url, timeout_s=5)
    started = time.monotonic()
    try:
        with pytest.raises(TerminologyUnavailable) as raised:
            await server.condition("Hypertension")
    finally:
        await server.aclose()
    assert time.monotonic() - started < 2
    assert raised.value.reason == "the terminology server cannot be reached"
    assert "127.0.0.1" not in str(raised.value)


async def test_aclose_closes_only_a_client_the_server_made(tx: TerminologyDouble) -> None:
    own = TerminologyServer(tx.base_url)
    await own.aclose()
    with pytest.raises(RuntimeError):
        await own.condition("Hypertension")

    async with FHIRClient(tx.base_url) as shared:
        server = TerminologyServer(tx.base_url, fhir=shared)
        await server.aclose()
        assert (await server.condition("Hypertension")).mapped
