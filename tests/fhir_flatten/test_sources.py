"""Reading FHIR input for flattening: Bundles (streamed, two passes), NDJSON, one resource.

No database, no network. The memory test generates a 200,000-entry Bundle on disk and reads it
in a child process, so that the figure is that of the reader alone.
"""

import io
import json
import random
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from features.fhir_flatten.engine import jsonstream, sources
from features.fhir_flatten.engine.sources import (
    Delete,
    EntryProblem,
    InvalidEntries,
    SourceError,
    Upsert,
    read_any,
    read_bundle,
    read_ndjson,
)

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"

PATIENT_UUID = "1b9f3c4e-0000-4000-8000-000000000001"
ENCOUNTER_UUID = "1b9f3c4e-0000-4000-8000-000000000002"
OBSERVATION_UUID = "1b9f3c4e-0000-4000-8000-000000000003"


class Trickle:
    """A stream that cannot seek and returns 1 to 7 bytes a read, whatever is asked."""

    def __init__(self, data: bytes, seed: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._random = random.Random(seed)

    def read(self, size: int = -1) -> bytes:
        count = self._random.randint(1, 7)
        if size >= 0:
            count = min(count, size)
        chunk = self._data[self._pos : self._pos + count]
        self._pos += len(chunk)
        return chunk

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def bundle(entries: list, bundle_type: str = "transaction") -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": entries}).encode()


def post(resource: dict, full_url: str | None = None) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    return {"fullUrl": full_url, **entry} if full_url else entry


def read(data: bytes) -> list[Upsert | Delete]:
    return list(read_bundle(io.BytesIO(data)))


def by_type(items: list[Upsert | Delete]) -> dict[str, Upsert]:
    return {item.resource_type: item for item in items if isinstance(item, Upsert)}


def problems_of(data: bytes, reader=read) -> list[tuple[str, str]]:
    with pytest.raises(InvalidEntries) as raised:
        reader(data)
    return [(problem.where, problem.message) for problem in raised.value.problems]


def source_error(data: bytes, reader=read) -> SourceError:
    with pytest.raises(SourceError) as raised:
        reader(data)
    assert not isinstance(raised.value, InvalidEntries), raised.value
    return raised.value


def references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


def small_chunks(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setattr(jsonstream, "CHUNK_BYTES", size)
    monkeypatch.setattr(sources, "CHUNK_BYTES", size)


# --- references and ids ---------------------------------------------------------------------


def linked_bundle() -> bytes:
    """An Observation that points forwards, a Patient, an Encounter that points backwards."""
    observation = {
        "resourceType": "Observation",
        "id": OBSERVATION_UUID,
        "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"},
        "encounter": {"reference": f"urn:uuid:{ENCOUNTER_UUID}"},
        "performer": [{"reference": "Practitioner/local-1"}, {"reference": "#contained-1"}],
        "extension": [
            {"url": "x", "valueReference": {"reference": f"urn:uuid:{PATIENT_UUID}"}},
        ],
    }
    patient = {"resourceType": "Patient", "id": PATIENT_UUID}
    encounter = {
        "resourceType": "Encounter",
        "id": ENCOUNTER_UUID,
        "subject": {"reference": f"urn:uuid:{PATIENT_UUID}", "display": "Ann"},
    }
    return bundle(
        [
            post(observation, f"urn:uuid:{OBSERVATION_UUID}"),
            post(patient, f"urn:uuid:{PATIENT_UUID}"),
            post(encounter, f"urn:uuid:{ENCOUNTER_UUID}"),
        ]
    )


def test_urn_uuid_references_are_resolved_forwards_and_backwards() -> None:
    items = by_type(read(linked_bundle()))

    observation = items["Observation"].resource
    assert observation["subject"] == {"reference": f"Patient/{PATIENT_UUID}"}
    assert observation["encounter"] == {"reference": f"Encounter/{ENCOUNTER_UUID}"}
    assert observation["extension"][0]["valueReference"]["reference"] == f"Patient/{PATIENT_UUID}"
    assert observation["performer"] == [
        {"reference": "Practitioner/local-1"},
        {"reference": "#contained-1"},
    ]
    encounter = items["Encounter"].resource
    assert encounter["subject"] == {"reference": f"Patient/{PATIENT_UUID}", "display": "Ann"}


def test_an_entry_comes_out_as_soon_as_its_references_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Backward references are resolved as the entry is read; an entry that points forwards
    waits until the end. The first entries come out before the input is read to its end."""
    small_chunks(monkeypatch, 64)
    data = linked_bundle()
    stream = io.BytesIO(data)
    items = read_bundle(stream)
    patient = next(items)
    assert (patient.resource_type, stream.tell() < len(data)) == ("Patient", True)
    encounter, observation = list(items)
    assert encounter.resource["subject"]["reference"] == f"Patient/{PATIENT_UUID}"
    assert observation.resource["encounter"]["reference"] == f"Encounter/{ENCOUNTER_UUID}"


def test_a_reference_to_another_server_waits_and_is_kept() -> None:
    elsewhere = "http://other.example.org/fhir/Patient/9"
    data = bundle(
        [
            post({"resourceType": "Observation", "id": "o1", "subject": {"reference": elsewhere}}),
            post({"resourceType": "Patient", "id": "p1"}),
        ]
    )
    patient, observation = read(data)  # the Observation waited: a later fullUrl could name it
    assert patient.id == "p1"
    assert observation.resource["subject"]["reference"] == elsewhere


@pytest.mark.parametrize("waits_first", [True, False])
def test_the_last_entry_for_a_resource_comes_out_last(waits_first: bool) -> None:
    waiting = post(
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "waited",
            "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"},
        }
    )
    at_once = post({"resourceType": "Observation", "id": "o1", "status": "at-once"})
    patient = post({"resourceType": "Patient", "id": PATIENT_UUID}, f"urn:uuid:{PATIENT_UUID}")
    entries = [waiting, at_once] if waits_first else [at_once, waiting]
    observations = [item for item in read(bundle([*entries, patient])) if item.id == "o1"]
    assert observations[-1].resource["status"] == ("at-once" if waits_first else "waited")
    if waits_first:
        assert len(observations) == 1  # the out-of-date entry is not given at all


def test_entries_before_the_bundle_type_wait_for_it() -> None:
    entry = post({"resourceType": "Patient", "id": "p1"})
    data = json.dumps({"entry": [entry], "resourceType": "Bundle", "type": "batch"}).encode()
    assert [item.id for item in read(data)] == ["p1"]
    bad = json.dumps({"entry": [entry], "resourceType": "Bundle", "type": "history"}).encode()
    with pytest.raises(SourceError, match="history"):
        read(bad)


def test_a_placeholder_names_the_resource_id_when_it_differs_from_the_uuid() -> None:
    data = bundle(
        [
            post({"resourceType": "Patient", "id": "p1"}, f"urn:uuid:{PATIENT_UUID}"),
            post({"resourceType": "Organization", "id": "org-7"}, "urn:oid:1.2.840.113619.6.197"),
            post(
                {
                    "resourceType": "Encounter",
                    "id": "e1",
                    "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"},
                    "serviceProvider": {"reference": "urn:oid:1.2.840.113619.6.197"},
                }
            ),
        ]
    )
    encounter = by_type(read(data))["Encounter"].resource
    assert encounter["subject"]["reference"] == "Patient/p1"
    assert encounter["serviceProvider"]["reference"] == "Organization/org-7"


def test_a_resource_without_id_takes_the_uuid_of_its_full_url() -> None:
    data = bundle(
        [
            post({"resourceType": "Patient", "active": True}, f"urn:uuid:{PATIENT_UUID}"),
            post(
                {"resourceType": "Condition", "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"}},
                f"urn:uuid:{OBSERVATION_UUID}",
            ),
        ]
    )
    patient, condition = read(data)

    assert (patient.resource_type, patient.id) == ("Patient", PATIENT_UUID)
    assert patient.resource == {"resourceType": "Patient", "id": PATIENT_UUID, "active": True}
    assert list(patient.resource)[:2] == ["resourceType", "id"]
    assert condition.id == OBSERVATION_UUID
    assert condition.resource["subject"]["reference"] == f"Patient/{PATIENT_UUID}"


def test_absolute_full_urls_give_type_and_id_and_references_to_them_are_rewritten() -> None:
    data = bundle(
        [
            {
                "fullUrl": "http://example.org/fhir/Patient/123",
                "resource": {"resourceType": "Patient"},
            },
            {
                "fullUrl": "https://example.org/fhir/Observation/o-1/_history/2",
                "resource": {
                    "resourceType": "Observation",
                    "id": "o-1",
                    "subject": {"reference": "http://example.org/fhir/Patient/123"},
                    "focus": [{"reference": "http://elsewhere.org/fhir/Patient/9"}],
                },
            },
        ],
        "collection",
    )
    patient, observation = read(data)

    assert (patient.resource_type, patient.id) == ("Patient", "123")
    assert observation.resource["subject"]["reference"] == "Patient/123"
    # Not a fullUrl of this Bundle: a reference to another server, kept as it is.
    assert observation.resource["focus"][0]["reference"] == "http://elsewhere.org/fhir/Patient/9"


def test_references_with_escaped_slashes_are_rewritten_too() -> None:
    text = (
        b'{"resourceType": "Bundle", "type": "collection", "entry": ['
        b'{"fullUrl": "http:\\/\\/example.org\\/fhir\\/Patient\\/123",'
        b' "resource": {"resourceType": "Patient"}},'
        b'{"resource": {"resourceType": "Observation", "id": "o1",'
        b' "subject": {"reference": "http:\\/\\/example.org\\/fhir\\/Patient\\/123"},'
        b' "encounter": {"reference": "urn:uuid:\\u0031b9f3c4e-0000-4000-8000-000000000002"}}},'
        b'{"fullUrl": "urn:uuid:1b9f3c4e-0000-4000-8000-000000000002",'
        b' "resource": {"resourceType": "Encounter"}}]}'
    )
    observation = by_type(read(text))["Observation"].resource
    assert observation["subject"]["reference"] == "Patient/123"
    assert observation["encounter"]["reference"] == f"Encounter/{ENCOUNTER_UUID}"


def test_the_same_resource_twice_comes_out_twice_in_file_order() -> None:
    data = bundle(
        [
            {"fullUrl": "urn:uuid:" + PATIENT_UUID, "resource": {"resourceType": "Patient"}},
            {
                "fullUrl": "urn:uuid:" + PATIENT_UUID,
                "resource": {"resourceType": "Patient", "active": False},
            },
        ],
        "collection",
    )
    first, second = read(data)
    assert (first.id, second.id) == (PATIENT_UUID, PATIENT_UUID)
    assert "active" not in first.resource and second.resource["active"] is False


# --- entries: deletions, searchsets, Bundle types, member order -------------------------------


def test_delete_entries_come_out_in_file_order_without_a_resource() -> None:
    data = bundle(
        [
            post({"resourceType": "Patient", "id": "a"}),
            {"request": {"method": "DELETE", "url": "Patient/b"}},
            {
                "request": {"method": "PUT", "url": "Patient/c"},
                "resource": {"resourceType": "Patient", "id": "c"},
            },
            {"request": {"method": "DELETE", "url": "Observation/o.1"}, "fullUrl": "urn:uuid:x"},
        ]
    )
    assert [(type(item).__name__, item.resource_type, item.id) for item in read(data)] == [
        ("Upsert", "Patient", "a"),
        ("Delete", "Patient", "b"),
        ("Upsert", "Patient", "c"),
        ("Delete", "Observation", "o.1"),
    ]


def test_searchset_outcome_entries_are_skipped_and_included_ones_kept() -> None:
    data = bundle(
        [
            {"resource": {"resourceType": "Encounter", "id": "e1"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
            {
                "resource": {"resourceType": "OperationOutcome", "issue": []},
                "search": {"mode": "outcome"},
            },
        ],
        "searchset",
    )
    assert [(item.resource_type, item.id) for item in read(data)] == [
        ("Encounter", "e1"),
        ("Patient", "p1"),
    ]


@pytest.mark.parametrize("bundle_type", ["transaction", "batch", "collection", "searchset"])
def test_accepted_bundle_types(bundle_type: str) -> None:
    [item] = read(bundle([post({"resourceType": "Patient", "id": "p1"})], bundle_type))
    assert item.id == "p1"


@pytest.mark.parametrize(
    "bundle_type", ["history", "document", "message", "transaction-response", "batch-response"]
)
def test_other_bundle_types_are_refused(bundle_type: str) -> None:
    error = source_error(bundle([post({"resourceType": "Patient", "id": "p1"})], bundle_type))
    assert f"Bundle type '{bundle_type}' is not accepted" in error.message
    assert error.where and error.where.startswith("byte ")


def test_a_bundle_without_type_is_refused() -> None:
    error = source_error(b'{"resourceType": "Bundle", "entry": []}')
    assert error.message == "the Bundle has no type"


def test_resource_type_and_type_may_come_after_the_entries() -> None:
    entries = json.dumps([post({"resourceType": "Patient", "id": "p1"})])
    data = f'{{"id": "b1", "entry": {entries}, "type": "batch", "resourceType": "Bundle"}}'
    [item] = read(data.encode())
    assert item.id == "p1"
    [item] = list(read_any(io.BytesIO(data.encode())))
    assert item.id == "p1"


def test_a_late_resource_type_that_is_not_bundle_is_refused() -> None:
    entries = json.dumps([post({"resourceType": "Patient", "id": "p1"})])
    error = source_error(f'{{"entry": {entries}, "resourceType": "List"}}'.encode())
    assert error.message == "expected a Bundle, not resourceType 'List'"


def test_an_empty_bundle_gives_nothing() -> None:
    assert read(b'{"resourceType": "Bundle", "type": "searchset", "total": 0}') == []
    assert read(bundle([], "collection")) == []


# --- scanning: strings, chunk boundaries, streams ------------------------------------------


TRICKY_TEXT = (
    '{"resourceType": "Bundle", "type": "collection", "meta": {"tag": [{"code": "}]"}]},\n'
    ' "entry": [\n'
    '  {"fullUrl": "urn:uuid:' + PATIENT_UUID + '", "resource": {"resourceType": "Patient",'
    '   "name": [{"family": "O\\"Brien {[",'
    '   "given": ["Zoë", "\\u00c9mile", "\\ud83d\\ude00", "😀"]}],'
    '   "text": {"div": "<div>]} \\\\ \\" }{ [ ] \\n \\t \\/ \\\\</div>"},'
    '   "address": [{"line": ["back\\\\"], "city": "漢字"}]}},\n'
    '  {"resource": {"resourceType": "Observation", "id": "o1", "valueQuantity": {"value": -1.5e3},'
    '   "valueBoolean": false, "note": [{"text": "\\"reference\\": \\"urn:uuid:nothing\\""}],'
    '   "subject": {"reference": "urn:uuid:'
    + PATIENT_UUID
    + '"}, "interpretation": [], "x": {}}}\n'
    ' ], "total": 2}'
)


def expected_tricky() -> list[dict]:
    document = json.loads(TRICKY_TEXT)
    patient, observation = (entry["resource"] for entry in document["entry"])
    observation["subject"]["reference"] = f"Patient/{PATIENT_UUID}"
    return [{"resourceType": "Patient", "id": PATIENT_UUID} | patient, observation]


def test_strings_with_brackets_quotes_escapes_and_unicode_are_read_exactly() -> None:
    items = read(TRICKY_TEXT.encode())
    assert [item.resource for item in items] == expected_tricky()
    # The "reference" inside the note's text is text, not a reference: neither rewritten nor
    # reported as pointing nowhere.
    assert items[1].resource["note"][0]["text"] == '"reference": "urn:uuid:nothing"'


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_chunk_boundaries_anywhere_give_the_same_result(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    small_chunks(monkeypatch, chunk)
    for seed in range(3):
        items = list(read_bundle(Trickle(TRICKY_TEXT.encode(), seed)))  # type: ignore[arg-type]
        assert [item.resource for item in items] == expected_tricky()
        items = list(read_any(Trickle(linked_bundle(), seed)))  # type: ignore[arg-type]
        assert items == read(linked_bundle())


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_every_kind_of_value_survives_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    small_chunks(monkeypatch, chunk)
    text = (
        '{"total": 12345, "entry": [1, -23.5e2, "a\\\\", "\\"", true, null, 6789,'
        ' {"k": ["\\\\\\"", "]}", {}], "z": "é"}], "last": false, "n": 1000000}'
    )
    events = list(
        jsonstream.iter_object(Trickle(text.encode()).read, array_key="entry", max_value_chars=99)
    )
    items = [event for event in events if isinstance(event, jsonstream.Item)]
    assert [item.value for item in items] == json.loads(text)["entry"]
    assert [json.loads(item.text) for item in items] == json.loads(text)["entry"]
    members = {e.key: e.value for e in events if isinstance(e, jsonstream.Member)}
    assert members == {"total": 12345, "last": False, "n": 1000000}


@pytest.mark.parametrize("chunk", [1, 3, 64 * 1024])
def test_bytes_that_are_not_utf8_are_placed_exactly(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    small_chunks(monkeypatch, chunk)
    entry = post({"resourceType": "Patient", "id": "p1", "text": {"div": "é" * 50}})
    data = json.dumps({"resourceType": "Bundle", "entry": [entry]}, ensure_ascii=False).encode()
    data = data.replace("é".encode() * 3, "é".encode() + b"\xc3\x28" + "é".encode(), 1)
    error = source_error(data)
    assert error.message == "not UTF-8 text"
    assert error.where == f"byte {data.index(bytes([0xC3, 0x28]))}"


def test_a_bundle_with_byte_order_mark_and_crlf_line_ends() -> None:
    data = b"\xef\xbb\xbf" + TRICKY_TEXT.replace("\n", "\r\n").encode()
    assert [item.resource for item in read(data)] == expected_tricky()


def test_a_syntax_error_in_an_entry_is_placed_in_the_file() -> None:
    text = (
        '{"resourceType": "Bundle", "type": "collection",\n"entry": [\n{"resource": {"a": 1,,}}]}'
    )
    error = source_error(text.encode())
    assert error.message == "not valid JSON: Expecting property name enclosed in double quotes"
    assert error.where == f"byte {text.index(',,') + 1} (line 3, column 22)"


# --- Synthea --------------------------------------------------------------------------------


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json")) if SYNTHEA.is_dir() else []


@pytest.mark.skipif(not synthea_files(), reason=f"no Synthea bundles in {SYNTHEA}")
def test_synthea_bundles_resolve_every_placeholder_to_a_resource_of_the_bundle() -> None:
    for path in synthea_files():
        items = list(read_bundle(path.open("rb")))
        document = json.loads(path.read_bytes())

        expected = Counter(entry["resource"]["resourceType"] for entry in document["entry"])
        assert Counter(item.resource_type for item in items) == expected, path.name
        loaded = {f"{item.resource_type}/{item.id}" for item in items}
        placeholders = references(document)
        resolved = [ref for item in items for ref in references(item.resource)]
        assert sum(ref.startswith("urn:uuid:") for ref in placeholders) > 100, path.name
        assert not [ref for ref in resolved if ref.startswith("urn:")], path.name
        assert len(resolved) == len(placeholders)
        assert {ref for ref in resolved if not ref.startswith("#")} <= loaded, path.name


@pytest.mark.skipif(not synthea_files(), reason=f"no Synthea bundles in {SYNTHEA}")
def test_a_synthea_bundle_trickled_through_a_stream_that_cannot_seek() -> None:
    path = synthea_files()[0]
    expected = list(read_bundle(path.open("rb")))
    assert list(read_any(Trickle(path.read_bytes()), filename=path.name)) == expected  # type: ignore[arg-type]


# --- bad entries -------------------------------------------------------------------------------


def test_every_bad_entry_is_listed_once_the_whole_bundle_is_read() -> None:
    deep = {"resourceType": "Basic", "id": "deep", "extension": json.loads("[" * 150 + "]" * 150)}
    data = bundle(
        [
            post({"resourceType": "Patient", "id": "good"}, f"urn:uuid:{PATIENT_UUID}"),
            "not an object",
            post({"resourceType": "patient", "id": "x"}),
            {"resource": {"id": "no-type"}},
            post({"resourceType": "Patient", "id": "has space"}),
            post({"resourceType": "Patient"}),
            {"request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/1"}},
            {"request": {"method": "DELETE", "url": "Patient?identifier=1"}},
            {"request": {"method": "DELETE"}},
            {
                "fullUrl": f"urn:uuid:{PATIENT_UUID}",
                "resource": {"resourceType": "Patient", "id": "other"},
            },
            {
                "fullUrl": "http://x.org/fhir/Patient/1",
                "resource": {"resourceType": "Patient", "id": "2"},
            },
            post(deep),
            post(
                {
                    "resourceType": "Observation",
                    "id": "o1",
                    "subject": {"reference": f"urn:uuid:{PATIENT_UUID}"},
                    "performer": [{"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}],
                }
            ),
            post({"resourceType": "Patient", "id": "also-good"}),
        ]
    )  # fmt: skip
    items = read_bundle(io.BytesIO(data))
    assert next(items).id == "good"  # read before any problem: the caller rolls it back
    with pytest.raises(InvalidEntries) as raised:
        next(items)  # nothing more comes out: the problems are raised at the end
    listed = [(problem.where, problem.message) for problem in raised.value.problems]
    assert [where for where, _ in listed] == [
        "entry[1]",
        "entry[2].resource.resourceType",
        "entry[3].resource.resourceType",
        "entry[4].resource.id",
        "entry[5].resource.id",
        "entry[6]",
        "entry[7].request.method",
        "entry[8].request.url",
        "entry[9].request.url",
        "entry[10].fullUrl",
        "entry[11].fullUrl",
        "entry[12]",
        "entry[13].resource.performer[0].reference",
    ]
    assert raised.value.total == 13
    assert listed[0][1] == "an entry must be a JSON object"
    assert listed[1][1] == '"patient" is not a resource type'
    assert listed[2][1] == "resourceType is missing"
    assert "is not a FHIR id" in listed[3][1]
    assert listed[4][1] == "id is missing"
    assert "no resource" in listed[5][1]
    assert "'GET' entry has nothing to load" in listed[6][1]
    assert "conditional deletes are refused" in listed[7][1]
    assert listed[9][1] == f"fullUrl 'urn:uuid:{PATIENT_UUID}' is also used for Patient/good"
    assert "names another resource than Patient/2" in listed[10][1]
    assert listed[11][1] == "nested deeper than 100 levels"
    assert "is the fullUrl of no entry in this Bundle" in listed[12][1]
    assert isinstance(raised.value, SourceError) and raised.value.where == "entry[1]"
    assert EntryProblem("entry[1]", "x").to_dict() == {"where": "entry[1]", "message": "x"}


def test_problems_listed_are_capped_but_all_counted() -> None:
    data = bundle([post({"resourceType": "Patient"}) for _ in range(1500)])
    with pytest.raises(InvalidEntries) as raised:
        read(data)
    assert len(raised.value.problems) == 1000
    assert raised.value.total == 1500
    assert raised.value.message == "1500 problems in the input"


def test_nesting_beyond_the_json_parser_is_a_problem_not_a_crash() -> None:
    deep = '{"resource": {"resourceType": "Basic", "id": "b", "x": ' + "[" * 100_000 + "]" * 100_000
    text = '{"resourceType": "Bundle", "type": "collection", "entry": [' + deep + "}}]}"
    assert problems_of(text.encode()) == [("entry[0]", "nested deeper than 100 levels")]

    member = '{"resourceType": "Bundle", "type": "collection", "meta": ' + "[" * 100_000
    error = source_error((member + "]" * 100_000 + "}").encode())
    assert error.message == "nested too deeply to read"

    line = '{"resourceType": "Basic", "id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert problems_of(line.encode(), ndjson) == [("line 1", "nested deeper than 100 levels")]


def test_nesting_is_measured_in_objects_and_arrays_up_to_the_limit() -> None:
    def nested(depth: int) -> object:
        return json.loads('{"a": ' * (depth - 1) + "[]" + "}" * (depth - 1))

    assert not jsonstream.nests_deeper_than(nested(100), 100)
    assert jsonstream.nests_deeper_than(nested(101), 100)
    assert not jsonstream.nests_deeper_than("a string", 0)
    assert jsonstream.nests_deeper_than([[], {"b": [1, {"c": 2}]}], 3)  # four levels
    assert not jsonstream.nests_deeper_than([[], {"b": [1, "c"]}], 3)

    # On several lines: one resource (on one line, it would be NDJSON).
    resource = '{"resourceType": "Basic",\n"id": "b", "x": ' + "[" * 150 + "]" * 150 + "}"
    error = source_error(resource.encode(), lambda data: list(read_any(io.BytesIO(data))))
    assert (error.message, error.where) == ("nested deeper than 100 levels", "resource")
    deeper = '{"resourceType": "Basic",\n"id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error = source_error(deeper.encode(), lambda data: list(read_any(io.BytesIO(data))))
    assert error.message in ("nested deeper than 100 levels", "nested too deeply to read")


def test_an_entry_larger_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_ENTRY_CHARS", 1000)
    padding = "x" * 2000
    data = bundle([post({"resourceType": "Patient", "id": "p1", "text": {"div": padding}})])
    error = source_error(data)
    assert error.message == "a single value is longer than 1,000 characters, the most accepted"
    assert error.where == f"byte {data.index(b'{', 1)} (line 1, column {data.index(b'{', 1) + 1})"

    line = json.dumps({"resourceType": "Patient", "id": "p1", "text": {"div": padding}})
    error = source_error(line.encode(), ndjson)
    assert error.where == "line 1"


def test_an_oversized_entry_is_refused_without_reading_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_chunks(monkeypatch, 64)
    monkeypatch.setattr(sources, "MAX_ENTRY_CHARS", 1000)
    data = bundle([post({"resourceType": "Binary", "id": "b", "data": "QUJD" * 250_000})])
    stream = io.BytesIO(data)
    with pytest.raises(SourceError) as raised:
        list(read_bundle(stream))
    assert raised.value.message.startswith("a single value is longer than 1,000 characters")
    assert stream.tell() < 2000  # of a 1 MB entry


def test_an_oversized_single_resource_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_ENTRY_CHARS", 1000)
    text = json.dumps({"resourceType": "Binary", "id": "b", "data": "QUJD" * 1000}, indent=2)
    error = source_error(text.encode(), any_reader)
    assert error.message == "a single resource is longer than 1,000 bytes"


def test_a_spool_dir_that_does_not_exist_fails_once_the_spool_goes_to_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sources, "SPOOL_MEMORY_BYTES", 100)
    ahead = {"reference": f"urn:uuid:{PATIENT_UUID}"}  # every Observation waits for the Patient
    data = bundle(
        [post({"resourceType": "Observation", "id": f"o{i}", "subject": ahead}) for i in range(19)]
        + [post({"resourceType": "Patient", "id": PATIENT_UUID}, f"urn:uuid:{PATIENT_UUID}")]
    )
    assert len(list(read_bundle(io.BytesIO(data), spool_dir=str(tmp_path)))) == 20
    with pytest.raises(FileNotFoundError):
        list(read_bundle(io.BytesIO(data), spool_dir=str(tmp_path / "missing")))


# --- inputs that are not FHIR at all ----------------------------------------------------------


def any_reader(data: bytes) -> list[Upsert | Delete]:
    return list(read_any(io.BytesIO(data)))


@pytest.mark.parametrize("reader", [read, any_reader], ids=["read_bundle", "read_any"])
@pytest.mark.parametrize(
    ("data", "message", "where"),
    [
        (b"", "the input is empty", "byte 0 (line 1, column 1)"),
        (b"  \n\t ", "the input is empty", "byte 5 (line 2, column 3)"),
        (b"Patient,Smith\n", "expected a JSON object, found text that is not JSON", "byte 0"),
        (b"<Bundle xmlns='http://hl7.org/fhir'/>", "expected a JSON object, found '<'", "byte 0"),
        (b"\n [1, 2]", "expected a JSON object, found an array", "byte 2 (line 2, column 2)"),
        (b"42", "expected a JSON object, found a number", "byte 0"),
        (b'{"resourceType": "Bundle", "type": ', "the input ends early: expected a value",
         "byte 35"),
        (b'{"resourceType": "Bundle", "type": "coll',
         "the input ends inside the value that starts here", "byte 35"),
        (b'{"resourceType": "Bundle" "type": 1}', "expected ',' or '}' after", "byte 26"),
        (b'{"resourceType": "Bundle", "type": "collection"} {}', "unexpected data", "byte 49"),
        (b'{"resourceType": "Bundle", "type": "collection"}\n[]', "unexpected data", "byte 49"),
        (b'{"a": 1, "a": 2}', "duplicate member 'a'", "byte 9"),
        (b'{"resourceType": "Bundle", "type": "batch", "entry": [{}',
         "the input ends early: expected ',' or ']'", "byte 56"),
        (b'{"resourceType": "Bundle", "type": "batch", "entry": {}}',
         "Bundle.entry must be an array", "byte 53"),
        (b'{"resourceType": "B\xffundle"}', "not UTF-8 text", "byte 19"),
    ],
)  # fmt: skip
def test_inputs_that_are_not_usable_say_what_and_where(
    reader, data: bytes, message: str, where: str
) -> None:
    error = source_error(data, reader)
    assert error.message.startswith(message)
    assert error.where is not None and error.where.startswith(where)


@pytest.mark.parametrize("reader", [read, any_reader], ids=["read_bundle", "read_any"])
def test_a_json_object_that_is_not_fhir_is_refused(reader) -> None:
    error = source_error(b'{"name": "Ann", "entries": [1, 2]}', reader)
    assert error.message == "not a FHIR resource: the JSON object has no resourceType"


def test_read_bundle_refuses_a_single_resource() -> None:
    error = source_error(b'{"resourceType": "Patient", "id": "p1"}')
    assert error.message == "expected a Bundle, not resourceType 'Patient'"


# --- NDJSON ---------------------------------------------------------------------------------


def ndjson(data: bytes) -> list[Upsert | Delete]:
    return list(read_ndjson(io.BytesIO(data)))


def test_ndjson_gives_one_resource_a_line_and_skips_blank_lines() -> None:
    data = (
        b'\xef\xbb\xbf{"resourceType": "Patient", "id": "p1"}\r\n'
        b"\n   \n"
        b'{"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}\n'
        b'{"resourceType": "Patient", "id": "p2"}'
    )
    items = ndjson(data)
    assert [(item.resource_type, item.id) for item in items] == [
        ("Patient", "p1"),
        ("Observation", "o1"),
        ("Patient", "p2"),
    ]
    assert items[1].resource["subject"] == {"reference": "Patient/p1"}


def test_ndjson_bad_lines_are_all_listed_with_their_numbers() -> None:
    data = (
        b'{"resourceType": "Patient", "id": "p1"}\n'
        b'{"resourceType": "Patient", "id": "p2"\n'
        b"\n"
        b'{"id": "x"}\n'
        b'["not", "an", "object"]\n'
        b'{"resourceType": "Patient"}\n'
        b'{"resourceType": "Patient", "id": "\xff"}\n'
        b'{"resourceType": "Patient", "id": "p3"}\n'
    )
    yielded = []
    with pytest.raises(InvalidEntries) as raised:
        for item in read_ndjson(io.BytesIO(data)):
            yielded.append(item.id)
    assert yielded == ["p1"]  # before the first bad line only
    assert [(problem.where, problem.message) for problem in raised.value.problems] == [
        ("line 2", "not valid JSON: Expecting ',' delimiter at column 39"),
        ("line 4", "resourceType is missing"),
        ("line 5", "a resource must be a JSON object"),
        ("line 6", "id is missing"),
        ("line 7", "not UTF-8 text at byte 36 of the line"),
    ]


def test_empty_ndjson_is_refused() -> None:
    assert source_error(b"\n\n  \n", ndjson).message == "the input is empty"


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_ndjson_chunk_boundaries_anywhere(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    small_chunks(monkeypatch, chunk)
    lines = [
        {"resourceType": "Patient", "id": f"p{i}", "name": [{"family": "Zoë"}]} for i in range(9)
    ]
    data = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    assert [item.resource for item in read_ndjson(Trickle(data))] == lines  # type: ignore[arg-type]


# --- read_any: what the input is --------------------------------------------------------------


def kinds(items: list[Upsert | Delete]) -> list[tuple[str, str]]:
    return [(item.resource_type, item.id) for item in items]


def test_read_any_reads_bundles_minified_or_pretty() -> None:
    expected = kinds(read(linked_bundle()))
    assert kinds(any_reader(linked_bundle())) == expected
    pretty = json.dumps(json.loads(linked_bundle()), indent=2).encode()
    assert kinds(any_reader(pretty)) == expected


def test_read_any_takes_ndjson_from_the_content_type_or_the_file_name() -> None:
    # A single line that is a Bundle: as NDJSON it is one resource, a Bundle among others.
    document = {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": []}
    document["entry"].append(post({"resourceType": "Patient", "id": "p1"}))
    data = json.dumps(document).encode()
    for options in (
        {"content_type": "application/fhir+ndjson"},
        {"content_type": "application/x-ndjson; charset=utf-8"},
        {"filename": "Patient.NDJSON"},
    ):
        [item] = list(read_any(io.BytesIO(data), **options))
        assert item.resource_type == "Bundle", options
    assert kinds(list(read_any(io.BytesIO(data), content_type="application/fhir+json"))) == [
        ("Patient", "p1")
    ]


def test_read_any_recognises_several_objects_one_per_line_as_ndjson() -> None:
    data = b'{"resourceType": "Patient", "id": "p1"}\n{"resourceType": "Patient", "id": "p2"}\n'
    assert kinds(any_reader(data)) == [("Patient", "p1"), ("Patient", "p2")]


def test_read_any_reads_a_single_resource_minified_or_pretty() -> None:
    resource = {"resourceType": "Patient", "name": [{"family": "Ann"}], "id": "p1"}
    for text in (json.dumps(resource), json.dumps(resource, indent=2) + "\n"):
        [item] = any_reader(text.encode())
        assert item == Upsert("Patient", "p1", resource)


def test_read_any_reads_a_large_pretty_resource_whole() -> None:
    resource = {"resourceType": "Binary", "id": "b1", "data": "QUJD" * 40_000}
    [item] = any_reader(json.dumps(resource, indent=1).encode())
    assert item == Upsert("Binary", "b1", resource)


def test_read_any_lists_the_problems_of_a_single_resource() -> None:
    text = json.dumps({"resourceType": "Patient", "id": "bad id"}, indent=2).encode()
    assert problems_of(text, any_reader)[0][0] == "resource.id"
    error = source_error(b'{\n  "resourceType": "Patient",\n  "id": }', any_reader)
    assert error.message == "not valid JSON: Expecting value"
    assert error.where == "byte 39 (line 3, column 9)"


# --- memory -----------------------------------------------------------------------------------


MEMORY_PROBE = textwrap.dedent(
    """
    import resource, sys
    from features.fhir_flatten.engine.sources import read_bundle

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(sys.argv[1], "rb") as stream:
        count = sum(1 for _ in read_bundle(stream))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(count, (after - before) * 1024)  # ru_maxrss is in KiB on Linux
    """
)


PATIENT_JSON = json.dumps(
    {
        "resourceType": "Patient",
        "name": [{"family": "@FAMILY", "given": ["Given"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }
)
OBSERVATION_JSON = json.dumps(
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Pulse"}]},
        "subject": {"reference": "urn:uuid:@PATIENT"},
        "valueQuantity": {"value": "@VALUE", "unit": "/min"},
    }
).replace('"@VALUE"', "@VALUE")
ENTRY_JSON = json.dumps(
    {
        "fullUrl": "urn:uuid:@UUID",
        "resource": "@RESOURCE",
        "request": {"method": "POST", "url": "@TYPE"},
    }
).replace('"@RESOURCE"', "@RESOURCE")


def write_large_bundle(path: Path, entries: int) -> None:
    """Patients, each followed by three Observations that point back to it (urn:uuid)."""
    with path.open("w") as out:
        out.write('{"resourceType": "Bundle", "type": "transaction", "entry": [\n')
        for index in range(entries):
            uuid = f"00000000-0000-4000-8000-{index:012x}"
            if index % 4 == 0:
                patient = uuid
                kind, resource = "Patient", PATIENT_JSON.replace("@FAMILY", f"Family{index}")
            else:
                kind = "Observation"
                resource = OBSERVATION_JSON.replace("@PATIENT", patient)
                resource = resource.replace("@VALUE", str(index % 100))
            entry = ENTRY_JSON.replace("@UUID", uuid).replace("@TYPE", kind)
            out.write(("," if index else "") + entry.replace("@RESOURCE", resource) + "\n")
        out.write("]}\n")


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory read from ru_maxrss on Linux")
def test_a_200000_entry_bundle_is_read_with_bounded_memory(tmp_path: Path) -> None:
    # Measured in a child process with ru_maxrss rather than with tracemalloc: tracemalloc makes
    # this read five times slower (about 45 s), and the child's peak is the reader's alone.
    path = tmp_path / "large-bundle.json"
    write_large_bundle(path, 200_000)
    size = path.stat().st_size
    assert size > 50_000_000

    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    count, peak_growth = map(int, probe.stdout.split())
    assert count == 200_000
    # json.load of this file takes about 7 times its size; the reader holds the fullUrl map
    # (about 100 bytes an entry) and one entry at a time.
    assert peak_growth < size / 2, f"{peak_growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB Bundle"
