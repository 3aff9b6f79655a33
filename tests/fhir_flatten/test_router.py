"""fhir_flatten through the API: loading Bundles and NDJSON into the views' tables, views of
one's own, rows out, $run, roles, and bad input. Real PostgreSQL, real Synthea data."""

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from app.security import Role
from features.fhir_flatten import handlers, inbox
from tests.conftest import ROOT, SHARED_DATA, create_database, drop_database

SYNTHEA = SHARED_DATA / "synthea"
SUITE = SHARED_DATA / "sql-on-fhir-v2" / "tests"
FHIR_JSON = "application/fhir+json"


def synthea_files() -> list[Path]:
    files = sorted(SYNTHEA.glob("*.json"))
    if not files:
        pytest.skip(f"the Synthea bundles are not at {SYNTHEA}")
    return files


def bundle(*resources: dict, kind: str = "collection") -> dict:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def patient(pid: str, family: str = "Lee", **extra) -> dict:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": family, "given": ["Ann", "Marie"]}],
        "gender": "female",
        "birthDate": "1970-03-04",
        **extra,
    }


def observation(oid: str, pid: str, value: float = 72.5) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
        "subject": {"reference": f"urn:uuid:{pid}"},
        "effectiveDateTime": "2026-01-05T08:30:00Z",
        "valueQuantity": {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


async def post_bundle(client, user, body, content_type=FHIR_JSON):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(
        "/flatten/bundles",
        content=content,
        headers={**user.headers, "Content-Type": content_type},
    )


async def rows(client, user, view, **params) -> list[dict]:
    response = await client.get(f"/flatten/views/{view}/rows", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_synthea_bundle_lands_in_every_view(client, views, analyst):
    path = synthea_files()[0]
    data = json.loads(path.read_text())
    by_type: dict[str, int] = {}
    for entry in data["entry"]:
        kind = entry["resource"]["resourceType"]
        by_type[kind] = by_type.get(kind, 0) + 1

    response = await post_bundle(client, analyst, path.read_bytes())
    assert response.status_code == 200, response.text
    counts = response.json()
    assert counts["resources"] == by_type
    assert counts["rows"]["patient"] == 1
    assert counts["rows"]["condition"] == by_type.get("Condition", 0)
    assert counts["rows"]["observation"] >= by_type["Observation"]

    patient_id = next(
        e["resource"]["id"] for e in data["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    [flat] = await rows(client, analyst, "patient")
    assert flat["id"] == patient_id and flat["birth_date"]
    conditions = await rows(client, analyst, "condition", patient_id=patient_id)
    assert len(conditions) == by_type.get("Condition", 0)
    assert all(
        c["patient_id"] == patient_id and c["system"] == "http://snomed.info/sct"
        for c in conditions
    )

    listed = {
        v["name"]: v for v in (await client.get("/flatten/views", headers=analyst.headers)).json()
    }
    assert listed["patient"]["row_count"] == 1
    assert listed["observation"]["table"] == "flat_observation"
    assert {"value", "unit", "code", "row_kind"} <= {
        c["name"] for c in listed["observation"]["columns"]
    }

    again = await post_bundle(client, analyst, path.read_bytes())
    assert again.status_code == 200
    assert len(await rows(client, analyst, "condition", patient_id=patient_id)) == len(conditions)


async def test_blood_pressure_gives_component_rows(client, views, analyst):
    pid, oid = str(uuid.uuid4()), str(uuid.uuid4())
    pressure = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "unit": "mmHg"},
            },
        ],
    }
    assert (await post_bundle(client, analyst, bundle(pressure))).status_code == 200
    found = sorted(
        await rows(client, analyst, "observation", id=oid),
        key=lambda r: (r["row_kind"], r["component_index"] or 0),
    )
    assert [(r["row_kind"], r["code"], r["value"]) for r in found] == [
        ("component", "8480-6", 120),
        ("component", "8462-4", 80),
        ("observation", "85354-9", None),
    ]


async def test_loading_again_replaces_and_delete_entries_remove(client, views, analyst):
    pid, oid = str(uuid.uuid4()), str(uuid.uuid4())
    await post_bundle(client, analyst, bundle(patient(pid), observation(oid, pid, 70)))
    [row] = await rows(client, analyst, "observation", id=oid)
    assert row["value"] == 70 and row["patient_id"] == pid

    await post_bundle(client, analyst, bundle(patient(pid), observation(oid, pid, 68.5)))
    assert [r["value"] for r in await rows(client, analyst, "observation", id=oid)] == [68.5]

    deletion = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"Observation/{oid}"}}],
    }
    response = await post_bundle(client, analyst, deletion)
    assert response.json()["deleted"] == {"Observation": 1}
    assert await rows(client, analyst, "observation", id=oid) == []


async def test_a_resource_loaded_again_later_in_the_same_load_has_one_set_of_rows(
    client, views, analyst, monkeypatch
):
    """A resource first stored in this load has no rows to delete; stored again a chunk later
    (same transaction), its first rows must still be replaced."""
    from features.fhir_flatten.store import loading

    monkeypatch.setattr(loading, "CHUNK", 2)
    pid, other, oid = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    # Chunks of two: [Patient, Observation at 70], [another Patient, the Observation at 68.5].
    body = bundle(
        patient(pid), observation(oid, pid, 70), patient(other), observation(oid, pid, 68.5)
    )
    response = await post_bundle(client, analyst, body)
    assert response.status_code == 200, response.text
    assert [r["value"] for r in await rows(client, analyst, "observation", id=oid)] == [68.5]


async def test_an_older_version_changes_nothing(client, views, analyst):
    pid = str(uuid.uuid4())
    newer = patient(pid, "Newer", meta={"lastUpdated": "2026-02-01T00:00:00Z"})
    older = patient(pid, "Older", meta={"lastUpdated": "2025-01-01T00:00:00Z"})
    await post_bundle(client, analyst, bundle(newer))
    response = await post_bundle(client, analyst, bundle(older))
    assert response.json()["unchanged"] == {"Patient": 1}
    assert [r["family_name"] for r in await rows(client, analyst, "patient", id=pid)] == ["Newer"]


async def test_ndjson(client, views, analyst):
    pids = [str(uuid.uuid4()) for _ in range(3)]
    body = "\n".join(json.dumps(patient(pid)) for pid in pids).encode() + b"\n"
    response = await post_bundle(client, analyst, body, "application/fhir+ndjson")
    assert response.status_code == 200, response.text
    assert response.json()["resources"] == {"Patient": 3}


@pytest.mark.parametrize(
    ("content", "content_type", "status", "says"),
    [
        (b"this is not json", FHIR_JSON, 422, ""),
        (b'{"hello": "world"}', FHIR_JSON, 422, ""),
        (b"[1, 2, 3]", FHIR_JSON, 422, ""),
        (b"id,name\n1,x\n", "text/csv", 415, "application/fhir+json"),
    ],
)
async def test_bad_input(client, views, analyst, content, content_type, status, says):
    response = await post_bundle(client, analyst, content, content_type)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


async def test_a_bad_entry_refuses_the_whole_file(client, views, analyst, session):
    good = patient(str(uuid.uuid4()))
    nameless = {"fullUrl": "http://example.org/x", "resource": {"id": "x1", "gender": "male"}}
    body = bundle(good)
    body["entry"].append(nameless)
    response = await post_bundle(client, analyst, body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][0].startswith("entry[1]")
    stored = await session.scalar(
        text("SELECT count(*) FROM flatten_resources WHERE id = :id"), {"id": good["id"]}
    )
    assert stored == 0


async def test_views_of_ones_own(client, views, analyst, make_user):
    pid = str(uuid.uuid4())
    await post_bundle(client, analyst, bundle(patient(pid, "Own")))
    name = f"people_{uuid.uuid4().hex[:6]}"
    definition = {
        "resourceType": "ViewDefinition",
        "name": name,
        "status": "active",
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()", "type": "id"},
                    {"name": "family", "path": "name.family.first()", "type": "string"},
                    {"name": "given", "path": "name.given", "type": "string", "collection": True},
                ]
            }
        ],
    }
    created = await client.post("/flatten/views", json=definition, headers=analyst.headers)
    assert created.status_code == 201, created.text
    assert created.json()["row_count"] >= 1
    found = await rows(client, analyst, name, id=pid)
    assert found == [{"id": pid, "family": "Own", "given": ["Ann", "Marie"]}]
    csv_text = (
        await client.get(
            f"/flatten/views/{name}/rows",
            params={"format": "csv", "id": pid},
            headers=analyst.headers,
        )
    ).text
    assert csv_text.splitlines() == ["id,family,given", f'{pid},Own,"[""Ann"", ""Marie""]"']

    again = await client.post("/flatten/views", json=definition, headers=analyst.headers)
    assert again.status_code == 409
    fetched = await client.get(f"/flatten/views/{name}", headers=analyst.headers)
    assert fetched.json() == definition
    assert (
        await client.delete("/flatten/views/patient", headers=analyst.headers)
    ).status_code == 403
    assert (
        await client.delete(f"/flatten/views/{name}", headers=analyst.headers)
    ).status_code == 204
    assert (await client.get(f"/flatten/views/{name}", headers=analyst.headers)).status_code == 404


async def test_a_view_of_every_column_type_filters_on_each(client, views, analyst):
    """The longest view name, mixed-case and reserved-word column names, and a filter on a
    column of each PostgreSQL type the views' tables use."""
    pid = str(uuid.uuid4())
    extensions = {"decimal": 2.5, "dateTime": "2020-05-01T10:00:00+02:00", "time": "10:30:00"}
    person = patient(
        pid,
        active=True,
        multipleBirthInteger=2,
        extension=[
            {"url": f"urn:test:{kind}", f"value{kind[0].upper()}{kind[1:]}": value}
            for kind, value in extensions.items()
        ],
    )
    assert (await post_bundle(client, analyst, bundle(person))).status_code == 200
    name = f"t{uuid.uuid4().hex}".ljust(58, "x")

    def extension(kind: str) -> str:
        return f"extension('urn:test:{kind}').value.ofType({kind})"

    columns = {
        "id": ("getResourceKey()", "id"),
        "active": ("active", "boolean"),
        "multipleBirth": ("multipleBirth.ofType(integer)", "integer"),
        "births": ("multipleBirth.ofType(integer)", "integer64"),
        "weight": (extension("decimal"), "decimal"),
        "birthDate": ("birthDate", "date"),
        "at": (extension("dateTime"), "dateTime"),
        "clock": (extension("time"), "time"),
        "order": ("gender", "code"),
    }
    definition = {
        "resourceType": "ViewDefinition",
        "name": name,
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": column, "path": path, "type": kind}
                    for column, (path, kind) in columns.items()
                ]
            }
        ],
    }
    created = await client.post("/flatten/views", json=definition, headers=analyst.headers)
    assert created.status_code == 201, created.text
    assert created.json()["table"] == f"flat_{name}"
    expected = {
        "id": pid,
        "active": True,
        "multipleBirth": 2,
        "births": 2,
        "weight": 2.5,
        "birthDate": "1970-03-04",
        "at": "2020-05-01T08:00:00+00:00",
        "clock": "10:30:00",
        "order": "female",
    }
    assert await rows(client, analyst, name, id=pid) == [expected]
    filters = {
        "active": "true",
        "multipleBirth": "2",
        "births": "2",
        "weight": "2.50",
        "birthDate": "1970-03-04",
        "at": "2020-05-01T10:00:00+02:00",
        "clock": "10:30",
        "order": "female",
    }
    for column, value in filters.items():
        assert await rows(client, analyst, name, id=pid, **{column: value}) == [expected], column
    assert await rows(client, analyst, name, id=pid, active="false") == []
    assert (
        await client.delete(f"/flatten/views/{name}", headers=analyst.headers)
    ).status_code == 204


async def test_text_with_tabs_newlines_and_backslashes_comes_back_as_it_was(
    client, views, analyst, session
):
    """Rows go to PostgreSQL as COPY text, where these characters are escaped."""
    pid = str(uuid.uuid4())
    family = 'O\'Brien\tLee\nof "Cork" \\ \\N \\t\r'
    given = ["A\\nn", "Ma\trie", "\\"]
    person = patient(pid, family)
    person["name"][0]["given"] = given
    assert (await post_bundle(client, analyst, bundle(person))).status_code == 200
    [row] = await rows(client, analyst, "patient", id=pid)
    assert row["family_name"] == family
    assert row["given_names"] == " ".join(given)

    name = f"given_{uuid.uuid4().hex[:6]}"
    definition = {
        "resourceType": "ViewDefinition",
        "name": name,
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()", "type": "id"},
                    {"name": "given", "path": "name.given", "collection": True},
                ]
            }
        ],
    }
    created = await client.post("/flatten/views", json=definition, headers=analyst.headers)
    assert created.status_code == 201, created.text
    assert await rows(client, analyst, name, id=pid) == [{"id": pid, "given": given}]
    stored = await session.scalar(
        text("SELECT resource FROM flatten_resources WHERE id = :id"), {"id": pid}
    )
    assert stored == person


async def test_a_nul_character_refuses_the_file_naming_the_resource(
    client, views, analyst, session
):
    """PostgreSQL cannot store U+0000, in text or in JSONB: the resource is named, nothing is
    loaded."""
    good, bad = patient(str(uuid.uuid4())), patient(str(uuid.uuid4()), "Nul\u0000Lee")
    response = await post_bundle(client, analyst, bundle(good, bad))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][0] == f"Patient/{bad['id']}"
    assert "NUL" in response.json()["errors"][0]["msg"]
    stored = await session.scalar(
        text("SELECT count(*) FROM flatten_resources WHERE id = :id"), {"id": good["id"]}
    )
    assert stored == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda v: v["select"][0]["column"][0].update(path="name.nosuchfunction()"),
            "nosuchfunction",
        ),
        (lambda v: v["select"][0]["column"].append({"name": "id", "path": "id"}), "id"),
        (lambda v: v.update(where=[{"path": "name.family"}]), ""),
        (lambda v: v["select"][0]["column"].append({"name": "x" * 64, "path": "id"}), "63"),
        (lambda v: v["select"][0]["column"][0].update(path="(" * 10_000 + "id" + ")" * 10_000), ""),
    ],
)
async def test_invalid_views_are_422_naming_the_problem(client, views, analyst, change, says):
    definition = {
        "resourceType": "ViewDefinition",
        "name": f"bad_{uuid.uuid4().hex[:6]}",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "getResourceKey()"}]}],
    }
    change(definition)
    # A `where` that is not boolean shows when the view runs on data: have some.
    await post_bundle(client, analyst, bundle(patient(str(uuid.uuid4()))))
    response = await client.post("/flatten/views", json=definition, headers=analyst.headers)
    assert response.status_code == 422, response.text
    assert says in response.text


async def test_run_operation(client, views, analyst):
    definition = {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()"},
                    {"name": "gender", "path": "gender"},
                ]
            }
        ],
    }
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "viewResource", "resource": definition},
            {"name": "resource", "resource": patient("p-one")},
            {"name": "resource", "resource": patient("p-two", gender="male")},
            {"name": "_format", "valueCode": "ndjson"},
        ],
    }
    response = await client.post(
        "/flatten/ViewDefinition/$run", json=parameters, headers=analyst.headers
    )
    assert response.status_code == 200, response.text
    assert [json.loads(line) for line in response.text.splitlines()] == [
        {"id": "p-one", "gender": "female"},
        {"id": "p-two", "gender": "male"},
    ]


async def test_roles(client, views, make_user):
    patient_user = await make_user(Role.PATIENT)
    clinician = await make_user(Role.CLINICIAN)
    assert (await client.get("/flatten/views", headers=patient_user.headers)).status_code == 403
    assert (
        await client.get("/flatten/views/patient/rows", headers=patient_user.headers)
    ).status_code == 403
    assert (
        await client.get("/flatten/views/patient/rows", headers=clinician.headers)
    ).status_code == 200
    assert (await post_bundle(client, clinician, bundle(patient("x")))).status_code == 403


async def test_rows_paging_and_unknown_filter(client, views, analyst):
    pids = sorted(str(uuid.uuid4()) for _ in range(5))
    family = f"Page{uuid.uuid4().hex[:6]}"
    await post_bundle(client, analyst, bundle(*(patient(p, family) for p in pids)))
    page = await rows(client, analyst, "patient", family_name=family, limit=2, offset=2)
    assert [r["id"] for r in page] == pids[2:4]
    unknown = await client.get(
        "/flatten/views/patient/rows", params={"nope": "1"}, headers=analyst.headers
    )
    assert unknown.status_code == 400 and "nope" in unknown.text
    for column, value in (("birth_date", "not-a-date"), ("deceased", "maybe")):
        wrong = await client.get(
            "/flatten/views/patient/rows", params={column: value}, headers=analyst.headers
        )
        assert wrong.status_code == 400 and column in wrong.json()["detail"]
    typed = await rows(client, analyst, "patient", family_name=family, birth_date="1970-03-04")
    assert len(typed) == 5


async def test_the_inbox(app, views, session, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(bundle(patient(str(uuid.uuid4())))))
    same = tmp_path / "same-content-again.json"
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"resourceType": "Patient", "id": "ok"}\nnot json at all\n')
    ignored = tmp_path / "notes.txt"
    ignored.write_text("not for the inbox")
    old = time.time() - 60
    for path in (good, bad):
        os.utime(path, (old, old))
    sessionmaker = app.state.runtime.sessionmaker

    assert await inbox.scan(sessionmaker, tmp_path) == {"processed": 1, "failed": 1, "skipped": 0}
    assert (tmp_path / "processed" / "good.json").exists()
    assert (tmp_path / "failed" / "bad.ndjson").exists()
    reason = (tmp_path / "failed" / "bad.ndjson.error.txt").read_text()
    assert "line 2" in reason
    assert ignored.exists()

    same.write_text((tmp_path / "processed" / "good.json").read_text())
    os.utime(same, (old, old))
    assert await inbox.scan(sessionmaker, tmp_path) == {"processed": 0, "failed": 0, "skipped": 1}


@pytest.mark.slow
def test_the_command_line_loads_files_and_runs_the_suite(server_url, tmp_path):
    files = synthea_files()[:2]
    name = f"clinical_test_{os.getpid()}_flatten_cli"
    url = create_database(server_url, name)
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    try:
        loaded = subprocess.run(
            [sys.executable, "-m", "app", "flatten", *map(str, files)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert "from 2 files; 0 failed" in loaded.stdout
    finally:
        drop_database(server_url, name)
    if not SUITE.is_dir():
        pytest.skip(f"the SQL-on-FHIR suite is not at {SUITE}")
    report = tmp_path / "report.json"
    suite = subprocess.run(
        [sys.executable, "-m", "app", "sof-conformance", str(SUITE), "--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert suite.stdout.strip().splitlines()[-1] == "134 passed, 0 failed", suite.stdout
    assert len(json.loads(report.read_text())) == 22


def test_builtin_views_are_valid():
    definitions = handlers.builtin_definitions()
    assert set(definitions) == {
        "patient",
        "encounter",
        "condition",
        "observation",
        "medication_request",
        "immunization",
        "procedure",
        "allergy_intolerance",
        "diagnostic_report",
    }
    for name, definition in definitions.items():
        view = handlers.validate_view(copy.deepcopy(definition))
        assert definition["name"] == name and view.columns


async def test_run_over_the_stored_resources_page_by_page(client, views, analyst, monkeypatch):
    from features.fhir_flatten.store import loading

    family = f"Run{uuid.uuid4().hex[:6]}"
    pids = sorted(str(uuid.uuid4()) for _ in range(5))
    await post_bundle(client, analyst, bundle(*(patient(p, family) for p in pids)))
    monkeypatch.setattr(loading, "CHUNK", 2)  # pages of two: the answer spans three
    definition = {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "where": [{"path": f"name.family = '{family}'"}],
        "select": [{"column": [{"name": "id", "path": "getResourceKey()"}]}],
    }
    response = await client.post(
        "/flatten/ViewDefinition/$run", json=definition, headers=analyst.headers
    )
    assert response.status_code == 200, response.text
    assert sorted(row["id"] for row in response.json()) == pids

    definition["where"] = [{"path": "name.family"}]  # not a boolean: fails on the first page
    refused = await client.post(
        "/flatten/ViewDefinition/$run", json=definition, headers=analyst.headers
    )
    assert refused.status_code == 422
    assert "not a boolean" in refused.json()["detail"]


async def test_processes_starting_together_register_the_builtin_views_once(server_url, settings):
    import asyncio

    from app.db import create_engine, create_sessionmaker

    name = f"clinical_views_race_{os.getpid()}"
    url = await asyncio.to_thread(create_database, server_url, name)
    engines = [create_engine(url, settings) for _ in range(3)]
    try:

        async def start_up(engine) -> list[str]:
            async with create_sessionmaker(engine)() as session, session.begin():
                return await handlers.ensure_builtin_views(session)

        results = await asyncio.gather(*(start_up(engine) for engine in engines))
        assert sorted(len(changed) for changed in results) == [0, 0, 9]
        async with engines[0].connect() as connection:
            tables = await connection.scalar(
                text("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'flat\\_%'")
            )
        assert tables == 9
    finally:
        for engine in engines:
            await engine.dispose()
        await asyncio.to_thread(drop_database, server_url, name)
