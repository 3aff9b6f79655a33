import uuid
from datetime import date, timedelta

import pytest

from app.security import Role
from tests.conftest import patient_body

PROBLEM = "application/problem+json"


@pytest.fixture
async def create(client, clinician):
    async def _create(**overrides):
        response = await client.post(
            "/patients", json=patient_body(**overrides), headers=clinician.headers
        )
        assert response.status_code == 201, response.text
        return response.json()

    return _create


async def test_create_then_get_with_location_and_etag(client, clinician):
    response = await client.post("/patients", json=patient_body(), headers=clinician.headers)
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/patients/{created['id']}"
    assert created["mrn"].startswith("MRN") and len(created["mrn"]) == 11
    assert created["version"] == 1
    fetched = await client.get(response.headers["location"], headers=clinician.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert fetched.headers["etag"] == '"1"'


async def test_given_mrn_is_kept_and_a_duplicate_is_409(client, create, clinician):
    await create(mrn="H-12345")
    again = await client.post(
        "/patients", json=patient_body(mrn="H-12345"), headers=clinician.headers
    )
    assert again.status_code == 409
    assert "H-12345" in again.json()["detail"]


async def test_generated_mrns_are_unique(create):
    mrns = {(await create())["mrn"] for _ in range(3)}
    assert len(mrns) == 3


async def test_update_with_current_etag_then_stale_etag_is_412(client, create, clinician):
    patient = await create()
    url = f"/patients/{patient['id']}"
    first = await client.put(
        url, json=patient_body(given_name="Jon"), headers={**clinician.headers, "If-Match": '"1"'}
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2
    assert first.headers["etag"] == '"2"'
    stale = await client.put(
        url,
        json=patient_body(given_name="Johnny"),
        headers={**clinician.headers, "If-Match": '"1"'},
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == PROBLEM
    current = await client.get(url, headers=clinician.headers)
    assert current.json()["given_name"] == "Jon"


async def test_update_accepts_weak_etags_and_star(client, create, clinician):
    patient = await create()
    url = f"/patients/{patient['id']}"
    weak = await client.put(
        url, json=patient_body(sex="other"), headers={**clinician.headers, "If-Match": 'W/"1"'}
    )
    assert weak.status_code == 200
    star = await client.put(
        url, json=patient_body(sex="female"), headers={**clinician.headers, "If-Match": "*"}
    )
    assert star.status_code == 200


@pytest.mark.parametrize("field", ["mrn", "id", "version", "role", "is_admin"])
async def test_update_refuses_fields_it_does_not_own(client, create, clinician, field):
    patient = await create()
    response = await client.put(
        f"/patients/{patient['id']}", json=patient_body(**{field: "X1"}), headers=clinician.headers
    )
    assert response.status_code == 422
    assert ["body", field] in [e["loc"] for e in response.json()["errors"]]


async def test_delete_with_a_stale_etag_is_412_and_deletes_nothing(client, create, clinician):
    patient = await create()
    url = f"/patients/{patient['id']}"
    await client.put(url, json=patient_body(given_name="Jon"), headers=clinician.headers)
    stale = await client.delete(url, headers={**clinician.headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert (await client.get(url, headers=clinician.headers)).status_code == 200


async def test_delete_is_204_then_404(client, create, clinician):
    patient = await create()
    url = f"/patients/{patient['id']}"
    assert (await client.delete(url, headers=clinician.headers)).status_code == 204
    assert (await client.get(url, headers=clinician.headers)).status_code == 404
    assert (await client.delete(url, headers=clinician.headers)).status_code == 404


async def test_unknown_patient_is_404_problem(client, clinician):
    response = await client.get(f"/patients/{uuid.uuid4()}", headers=clinician.headers)
    assert response.status_code == 404
    problem = response.json()
    assert response.headers["content-type"] == PROBLEM
    assert problem["type"] == "/problems/not-found" and problem["status"] == 404


@pytest.mark.parametrize("role", [Role.PATIENT, Role.ANALYST])
async def test_non_care_team_roles_get_403_everywhere(client, make_user, create, role):
    patient = await create()
    user = await make_user(role)
    for method, url, kwargs in [
        ("GET", "/patients", {}),
        ("POST", "/patients", {"json": patient_body()}),
        ("GET", f"/patients/{patient['id']}", {}),
        ("PUT", f"/patients/{patient['id']}", {"json": patient_body()}),
        ("DELETE", f"/patients/{patient['id']}", {}),
    ]:
        response = await client.request(method, url, headers=user.headers, **kwargs)
        assert response.status_code == 403, (method, url)


async def test_admin_may_use_the_registry(client, admin):
    response = await client.get("/patients", headers=admin.headers)
    assert response.status_code == 200


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (patient_body(birth_date=(date.today() + timedelta(days=1)).isoformat()), "birth_date"),
        (patient_body(birth_date="1960-13-01"), "birth_date"),
        (patient_body(birth_date=12), "birth_date"),
        (patient_body(sex="M"), "sex"),
        (patient_body(given_name=""), "given_name"),
        (patient_body(given_name="   "), "given_name"),
        (patient_body(given_name="x" * 101), "given_name"),
        (patient_body(given_name="Nul\x00Byte"), "given_name"),
        (patient_body(family_name=["Smith"]), "family_name"),
        (patient_body(mrn="has spaces"), "mrn"),
        ({k: v for k, v in patient_body().items() if k != "family_name"}, "family_name"),
    ],
)
async def test_bad_patient_bodies_are_422_naming_the_field(client, clinician, body, loc):
    response = await client.post("/patients", json=body, headers=clinician.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert ["body", loc] in [e["loc"] for e in response.json()["errors"]]


async def test_malformed_json_is_422(client, clinician):
    response = await client.post(
        "/patients",
        content=b'{"given_name": "John", ',
        headers={**clinician.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["type"] == "json_invalid"


async def test_a_body_over_one_megabyte_is_413(client, clinician):
    big = patient_body(given_name="x" * (1024 * 1024))
    response = await client.post("/patients", json=big, headers=clinician.headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM


async def test_a_chunked_body_over_the_limit_is_413_while_streaming(client, clinician):
    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    response = await client.post(
        "/patients",
        content=chunks(),
        headers={**clinician.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


# --- listing -------------------------------------------------------------------------------


async def test_fuzzy_search_finds_misspelled_names_ranked(client, create, clinician):
    await create(given_name="John", family_name="Smith")
    await create(given_name="Maria", family_name="Garcia", sex="female")
    await create(given_name="Johnny", family_name="Smithson")
    response = await client.get("/patients", params={"q": "Jonh Smth"}, headers=clinician.headers)
    assert response.status_code == 200
    names = [(p["given_name"], p["family_name"]) for p in response.json()["items"]]
    assert names[0] == ("John", "Smith")
    assert ("Maria", "Garcia") not in names


@pytest.mark.parametrize("q", ["%", "_", "%%", "' OR 1=1 --", '"; DROP TABLE patients; --', "\\"])
async def test_search_special_characters_are_literal(client, create, clinician, q):
    await create(given_name="John", family_name="Smith")
    response = await client.get("/patients", params={"q": q}, headers=clinician.headers)
    assert response.status_code == 200
    assert response.json()["items"] == []


async def test_search_matches_quotes_and_percent_literally(client, create, clinician):
    await create(given_name="Siobhan", family_name="O'Brien", sex="female")
    await create(given_name="Percy", family_name="100%Sure")
    await create(given_name="Snake", family_name="Under_Score")
    await create(given_name="Snake", family_name="UnderXScore")
    quote = await client.get("/patients", params={"q": "O'Brien"}, headers=clinician.headers)
    assert quote.json()["items"][0]["family_name"] == "O'Brien"
    percent = await client.get("/patients", params={"q": "100%"}, headers=clinician.headers)
    assert [p["family_name"] for p in percent.json()["items"]] == ["100%Sure"]
    underscore = await client.get(
        "/patients", params={"q": "Under_Score"}, headers=clinician.headers
    )
    assert underscore.json()["items"][0]["family_name"] == "Under_Score"


async def test_filters_by_mrn_and_birth_dates(client, create, clinician):
    await create(mrn="F-1", birth_date="1950-01-01")
    await create(mrn="F-2", birth_date="1970-06-15")
    await create(mrn="F-3", birth_date="1990-12-31")

    async def mrns(**params):
        response = await client.get("/patients", params=params, headers=clinician.headers)
        assert response.status_code == 200, response.text
        return sorted(p["mrn"] for p in response.json()["items"] if p["mrn"].startswith("F-"))

    assert await mrns(mrn="F-2") == ["F-2"]
    assert await mrns(birth_date="1970-06-15") == ["F-2"]
    assert await mrns(born_after="1960-01-01") == ["F-2", "F-3"]
    assert await mrns(born_before="1970-06-15") == ["F-1"]
    assert await mrns(born_after="1950-01-01", born_before="1990-12-31") == ["F-2"]


async def test_sort_by_several_fields_and_paging_never_repeats_or_skips(client, create, clinician):
    for i in range(7):
        await create(family_name="Same", given_name="Name", birth_date=f"19{60 + i % 2}-01-01")
    seen = []
    for page in (1, 2, 3, 4):
        response = await client.get(
            "/patients",
            params={"sort": "family_name,-birth_date", "page": page, "page_size": 2},
            headers=clinician.headers,
        )
        assert response.status_code == 200
        body = response.json()
        assert body["total"] == 7 and body["page"] == page and body["page_size"] == 2
        seen.extend(body["items"])
    assert len(seen) == 7
    assert len({p["id"] for p in seen}) == 7
    assert [p["birth_date"][:4] for p in seen] == ["1961"] * 3 + ["1960"] * 4


async def test_unknown_sort_field_is_422_listing_the_allowed(client, clinician):
    response = await client.get("/patients", params={"sort": "password"}, headers=clinician.headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["query", "sort"]
    assert "family_name" in problem["detail"] and "birth_date" in problem["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 100000},
        {"page_size": 0},
        {"page": 0},
        {"page": "x"},
        {"birth_date": "yesterday"},
    ],
)
async def test_bad_paging_and_filters_are_422(client, clinician, params):
    response = await client.get("/patients", params=params, headers=clinician.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][0] == "query"


async def test_default_page_size_is_20(client, clinician):
    response = await client.get("/patients", headers=clinician.headers)
    assert response.json()["page_size"] == 20


async def test_a_page_past_the_end_is_empty_but_keeps_the_total(client, create, clinician):
    for _ in range(3):
        await create(family_name="Pastend")
    response = await client.get(
        "/patients", params={"q": "Pastend", "page": 5, "page_size": 2}, headers=clinician.headers
    )
    assert response.status_code == 200
    assert response.json()["items"] == []
    assert response.json()["total"] == 3


# GET /patients/{id} and GET /patients check the account, read and audit in one statement;
# the other routes go through the dependency chain. Both must answer alike.
async def _invalidate(session, user, how: str) -> None:
    from datetime import UTC, datetime
    from datetime import timedelta as seconds

    from sqlalchemy import delete, update

    from features.auth.models import User

    if how == "disabled":
        statement = update(User).where(User.id == user.id).values(is_active=False)
    elif how == "deleted":
        statement = delete(User).where(User.id == user.id)
    else:  # its password changed after the token was issued
        later = datetime.now(UTC) + seconds(seconds=5)
        statement = update(User).where(User.id == user.id).values(password_changed_at=later)
    await session.execute(statement)
    await session.commit()


def _problem(response) -> dict:
    return {k: v for k, v in response.json().items() if k != "instance"}


@pytest.mark.parametrize("how", ["disabled", "deleted", "password changed"])
async def test_a_token_whose_account_is_no_longer_valid_reads_no_patient(
    client, make_user, create, session, admin, how
):
    patient = await create()
    user = await make_user(Role.CLINICIAN)
    url = f"/patients/{patient['id']}"
    assert (await client.get(url, headers=user.headers)).status_code == 200
    await _invalidate(session, user, how)

    read = await client.get(url, headers=user.headers)
    listing = await client.get("/patients", headers=user.headers)
    assert read.status_code == listing.status_code == 401
    assert _problem(read) == _problem(listing)
    assert read.headers["www-authenticate"] == "Bearer"
    assert read.headers["content-type"] == PROBLEM
    trail = await client.get(
        "/audit-events", params={"user_id": str(user.id)}, headers=admin.headers
    )
    assert [e["outcome"] for e in trail.json()["items"]] == ["success"]  # only the first read


async def test_a_refused_read_is_the_same_problem_and_audit_as_elsewhere(
    client, make_user, create, admin
):
    patient = await create()
    user = await make_user(Role.PATIENT)
    read = await client.get(f"/patients/{patient['id']}", headers=user.headers)
    listing = await client.get("/patients", headers=user.headers)
    assert read.status_code == listing.status_code == 403
    assert _problem(read) == _problem(listing)
    trail = await client.get(
        "/audit-events", params={"user_id": str(user.id)}, headers=admin.headers
    )
    events = trail.json()["items"]
    assert len(events) == 2
    assert {(e["action"], e["outcome"], e["patient_id"], e["detail"]) for e in events} == {
        ("patient.access", "denied", None, "role patient may not use the patient registry")
    }


async def test_a_read_answers_as_the_schema_and_audits_once(client, create, admin, clinician):
    patient = await create()
    response = await client.get(
        f"/patients/{patient['id']}", headers={**clinician.headers, "X-Request-ID": "read-1"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == patient
    assert response.headers["etag"] == f'"{patient["version"]}"'
    trail = await client.get(
        "/audit-events", params={"patient_id": patient["id"]}, headers=admin.headers
    )
    reads = [e for e in trail.json()["items"] if e["action"] == "patient.read"]
    assert [(e["outcome"], e["user_id"], e["user_role"], e["request_id"]) for e in reads] == [
        ("success", str(clinician.id), "clinician", "read-1")
    ]


async def test_a_malformed_patient_id_is_422_naming_it(client, clinician):
    response = await client.get("/patients/not-a-uuid", headers=clinician.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["path", "patient_id"]


@pytest.mark.parametrize("page, expected_items", [(1, 2), (3, 0)])
async def test_a_search_audits_once_with_its_total(
    client, create, admin, clinician, page, expected_items
):
    for _ in range(3):
        await create(family_name="Audited")
    response = await client.get(
        "/patients",
        params={"q": "Audited", "page": page, "page_size": 2},
        headers={**clinician.headers, "X-Request-ID": "search-1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["items"]) == expected_items
    assert response.json()["total"] == 3
    trail = await client.get(
        "/audit-events", params={"user_id": str(clinician.id)}, headers=admin.headers
    )
    searches = [e for e in trail.json()["items"] if e["action"] == "patient.search"]
    assert [(e["outcome"], e["detail"], e["request_id"], e["patient_id"]) for e in searches] == [
        ("success", "3 matching patients", "search-1", None)
    ]
