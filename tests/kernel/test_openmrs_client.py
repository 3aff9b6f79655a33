"""The OpenMRS client against a loopback double of OpenMRS's REST API: the real client code
runs end to end, sessions, retries and failures included."""

import base64
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr

from app.clients.openmrs import (
    OpenMRSAuthError,
    OpenMRSClient,
    OpenMRSError,
    OpenMRSNotConfigured,
    OpenMRSRequestError,
    OpenMRSUnavailable,
    get_openmrs_client,
    openmrs_datetime,
)
from app.logging import configure_logging
from tests.conftest import free_port
from tests.doubles.openmrs_server import NOT_FOUND_MESSAGE, REST, OpenMRSDouble

USERNAME = "integration"
PASSWORD = "S3cret-Passw0rd-7f3a"
BASIC_TOKEN = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
CONCEPT_UUID = "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
OBS_TIME = datetime(2024, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)
# Short enough that a test stays fast, long enough that a loaded machine answers in time.
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def double():
    with OpenMRSDouble(username=USERNAME, password=PASSWORD) as server:
        yield server


@pytest.fixture
def openmrs(double):
    double.reset()
    double.password = PASSWORD
    double.add_concept(CONCEPT_UUID, "Weight (kg)")
    yield double
    double.reset()


def make_client(base_url: str, password: str = PASSWORD, **options) -> OpenMRSClient:
    options = {"timeout_s": TIMEOUT_S, "max_retries": 2, "backoff_s": 0.01, **options}
    return OpenMRSClient(base_url, username=USERNAME, password=password, **options)


@pytest.fixture
async def client(openmrs):
    async with make_client(openmrs.base_url) as client:
        yield client


async def create_weight(client: OpenMRSClient, person: str, **overrides) -> str:
    arguments = {
        "person_uuid": person,
        "concept_uuid": CONCEPT_UUID,
        "obs_datetime": OBS_TIME,
        "value": 70.5,
    }
    return await client.create_obs(**{**arguments, **overrides})


# --- configuration ---------------------------------------------------------------------------


async def test_enabled_only_with_an_address_and_credentials():
    assert not OpenMRSClient(None, username=USERNAME, password=PASSWORD).enabled
    assert not OpenMRSClient(
        "http://openmrs:8080/openmrs", username=None, password=PASSWORD
    ).enabled
    assert not OpenMRSClient(
        "http://openmrs:8080/openmrs", username=USERNAME, password=None
    ).enabled
    async with OpenMRSClient("http://openmrs:8080/openmrs/", username=USERNAME, password="x") as c:
        assert c.enabled
        assert c.base_url == "http://openmrs:8080/openmrs"


async def test_calls_without_a_configuration_say_so():
    client = OpenMRSClient(None, username=None, password=None)
    with pytest.raises(OpenMRSNotConfigured) as raised:
        await client.find_patient("10001A")
    assert "OPENMRS_BASE_URL" in raised.value.reason
    with pytest.raises(OpenMRSUnavailable):
        await client.check()


async def test_from_settings_reads_a_secret_password(openmrs):
    settings = SimpleNamespace(
        openmrs_base_url=openmrs.base_url,
        openmrs_username=USERNAME,
        openmrs_password=SecretStr(PASSWORD),
        openmrs_timeout_s=2.5,
        openmrs_max_retries=1,
    )
    async with OpenMRSClient.from_settings(settings) as client:
        assert (client.timeout_s, client.max_retries) == (2.5, 1)
        await client.check()
    unset = SimpleNamespace(openmrs_base_url=None, openmrs_username=None, openmrs_password=None)
    assert not OpenMRSClient.from_settings(unset).enabled


async def test_credentials_in_the_address_are_moved_out_of_it(openmrs):
    with_userinfo = openmrs.base_url.replace("http://", f"http://{USERNAME}:{PASSWORD}@")
    async with OpenMRSClient(with_userinfo, username=None, password=None) as client:
        assert PASSWORD not in client.base_url
        await client.check()


async def test_the_dependency_is_the_runtimes_client():
    client = OpenMRSClient(None, username=None, password=None)
    request = SimpleNamespace(
        app=SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(openmrs=client)))
    )
    assert await get_openmrs_client(request) is client


def test_obs_times_are_sent_as_openmrs_documents_them():
    assert openmrs_datetime(OBS_TIME) == "2024-03-01T09:30:15.250+0000"
    plus_one = datetime(2024, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert openmrs_datetime(plus_one) == "2024-03-01T10:30:00.000+0100"
    assert openmrs_datetime("2019-11-14T07:37:31.000+0000") == "2019-11-14T07:37:31.000+0000"
    with pytest.raises(ValueError, match="time zone"):
        openmrs_datetime(datetime(2024, 3, 1, 9, 30))


# --- sessions --------------------------------------------------------------------------------


async def test_one_login_then_the_session_cookie(client, openmrs):
    patient = openmrs.add_patient("10001A")
    await client.check()
    assert await client.find_patient("10001A") == patient
    assert await client.find_patient("10001A") == patient
    await create_weight(client, patient)

    assert openmrs.auth_count == 1
    first, *later = openmrs.requests
    assert first.basic_auth and not first.session_cookie
    assert len(later) == 3
    assert all(r.session_cookie and not r.basic_auth for r in later)


async def test_an_expired_session_logs_in_again_once(client, openmrs):
    patient = openmrs.add_patient("10001A")
    assert await client.find_patient("10001A") == patient
    openmrs.expire_sessions()

    assert await client.find_patient("10001A") == patient
    assert openmrs.auth_count == 2
    searches = openmrs.requests_to("GET", "patient")
    assert [(r.basic_auth, r.session_cookie) for r in searches] == [
        (True, False),  # the first login
        (False, True),  # the expired cookie: 401 "Session timed out"
        (True, False),  # logged in again, without the dead cookie
    ]
    assert await client.find_patient("10001A") == patient
    assert openmrs.auth_count == 2


async def test_an_expired_session_while_creating_creates_once(client, openmrs):
    patient = openmrs.add_patient("10001A")
    await client.check()
    openmrs.expire_sessions()

    obs_uuid = await create_weight(client, patient)
    assert [o["uuid"] for o in openmrs.obs] == [obs_uuid]
    assert len(openmrs.requests_to("POST", "obs")) == 2  # the 401 did nothing; resent once


async def test_a_password_changed_on_the_server_fails_after_one_new_login(client, openmrs):
    openmrs.add_patient("10001A")
    await client.find_patient("10001A")
    openmrs.password = "changed-by-an-admin"
    openmrs.expire_sessions()

    with pytest.raises(OpenMRSAuthError):
        await client.find_patient("10001A")
    assert len(openmrs.requests_to("GET", "patient")) == 3  # the first, the 401, one login


async def test_a_logged_out_session_logs_in_again_for_readiness_and_calls(client, openmrs):
    patient = openmrs.add_patient("10001A")
    await client.check()
    openmrs.log_out_sessions()  # OpenMRS then answers /session 200 "authenticated": false
    await client.check()
    assert openmrs.auth_count == 2

    openmrs.log_out_sessions()  # ... and other resources 401 "User is not logged in"
    assert await client.find_patient("10001A") == patient
    assert openmrs.auth_count == 3


async def test_a_wrong_password_is_an_auth_error_with_openmrs_words(openmrs):
    openmrs.add_patient("10001A")
    async with make_client(openmrs.base_url, password="wrong-password") as client:
        with pytest.raises(OpenMRSAuthError) as raised:
            await client.find_patient("10001A")
        assert raised.value.status == 401
        assert "User is not logged in [Privileges required: Get Patients]" in raised.value.reason
        assert len(openmrs.requests) == 1  # a refusal is not retried

        with pytest.raises(OpenMRSAuthError) as raised_by_check:
            await client.check()
        assert "username and password" in raised_by_check.value.reason
    assert openmrs.auth_count == 0
    for error in (raised.value, raised_by_check.value):
        assert "wrong-password" not in str(error)
        assert isinstance(error, OpenMRSRequestError)


# --- patients --------------------------------------------------------------------------------


async def test_find_patient_found_none_and_several(client, openmrs):
    patient = openmrs.add_patient("10001A", uuid="b52ec6f9-0e26-424c-a4a1-c64f9d571eb3")
    openmrs.add_patient("10002B")
    openmrs.add_patient("10002B")

    assert await client.find_patient("10001A") == "b52ec6f9-0e26-424c-a4a1-c64f9d571eb3" == patient
    assert await client.find_patient("10001") is None  # identifiers match exactly
    with pytest.raises(OpenMRSRequestError) as raised:
        await client.find_patient("10002B")
    assert raised.value.reason == "several patients have identifier 10002B"

    search = openmrs.requests_to("GET", "patient")[0]
    assert search.query == {"identifier": "10001A", "v": "default"}


# --- observations ----------------------------------------------------------------------------


async def test_create_obs_returns_the_uuid_openmrs_gave_it(client, openmrs):
    patient = openmrs.add_patient("10001A")
    obs_uuid = await create_weight(client, patient, comment="weighed at intake")

    [created] = openmrs.obs
    assert created == {
        "person": patient,
        "concept": CONCEPT_UUID,
        "obsDatetime": "2024-03-01T09:30:15.250+0000",
        "value": 70.5,
        "comment": "weighed at intake",
        "uuid": obs_uuid,
    }
    async with httpx.AsyncClient(auth=(USERNAME, PASSWORD)) as http:
        read = (await http.get(f"{openmrs.base_url}/ws/rest/v1/obs/{obs_uuid}")).json()
    assert read["concept"]["display"] == "Weight (kg)"
    assert read["person"]["uuid"] == patient
    assert read["value"] == 70.5


async def test_create_obs_leaves_out_what_was_not_given(client, openmrs):
    patient = openmrs.add_patient("10001A")
    await client.create_obs(
        person_uuid=patient, concept_uuid=CONCEPT_UUID, obs_datetime="2019-11-14T07:37:31.000+0000"
    )
    [created] = openmrs.obs
    assert "value" not in created and "comment" not in created
    assert created["obsDatetime"] == "2019-11-14T07:37:31.000+0000"


async def test_an_unknown_concept_is_refused_with_openmrs_words_and_not_retried(client, openmrs):
    patient = openmrs.add_patient("10001A")
    with pytest.raises(OpenMRSRequestError) as raised:
        await create_weight(client, patient, concept_uuid="no-such-concept")
    assert raised.value.status == 404
    assert raised.value.reason == NOT_FOUND_MESSAGE
    assert not isinstance(raised.value, OpenMRSAuthError)
    assert len(openmrs.requests_to("POST", "obs")) == 1
    assert openmrs.obs == []


async def test_the_double_refuses_an_obs_without_its_required_properties(openmrs):
    async with httpx.AsyncClient(auth=(USERNAME, PASSWORD)) as http:
        answer = await http.post(
            f"{openmrs.base_url}/ws/rest/v1/obs", json={"person": openmrs.add_patient("1")}
        )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["message"] == "[Some required properties are missing: concept, obsDatetime]"
    assert set(error) >= {"message", "code", "detail"}


# --- failures and retries --------------------------------------------------------------------


async def test_a_500_on_a_read_is_retried(client, openmrs):
    patient = openmrs.add_patient("10001A")
    openmrs.fail_next(500)
    assert await client.find_patient("10001A") == patient
    assert len(openmrs.requests_to("GET", "patient")) == 2


async def test_a_lasting_500_on_a_read_gives_up_after_the_retries(client, openmrs):
    openmrs.fail_next(500, times=10)
    with pytest.raises(OpenMRSUnavailable) as raised:
        await client.find_patient("10001A")
    assert raised.value.status == 500
    assert raised.value.reason.startswith("OpenMRS failed (HTTP 500)")
    assert len(openmrs.requests_to("GET", "patient")) == 3  # max_retries=2


async def test_a_500_on_create_is_not_retried(client, openmrs):
    patient = openmrs.add_patient("10001A")
    openmrs.fail_next(500)
    with pytest.raises(OpenMRSUnavailable) as raised:
        await create_weight(client, patient)
    assert raised.value.status == 500
    assert len(openmrs.requests_to("POST", "obs")) == 1


async def test_an_html_error_page_is_unavailable_not_a_json_crash(client, openmrs):
    openmrs.fail_next(500, times=10, html=True)
    with pytest.raises(OpenMRSUnavailable) as raised:
        await client.find_patient("10001A")
    assert raised.value.reason == "OpenMRS failed (HTTP 500)"

    openmrs.fail_next(404, html=True)
    with pytest.raises(OpenMRSRequestError) as refused:
        await client.find_patient("10001A")
    assert refused.value.status == 404
    assert refused.value.reason == "OpenMRS refused the request (HTTP 404)"


async def test_a_slow_answer_times_out_quickly(openmrs):
    patient = openmrs.add_patient("10001A")
    openmrs.delay(5)
    async with make_client(openmrs.base_url, timeout_s=0.3, max_retries=1) as client:
        started = time.monotonic()
        with pytest.raises(OpenMRSUnavailable) as raised:
            await client.find_patient("10001A")
        assert time.monotonic() - started < 2
        assert "did not answer within 0.3 s" in raised.value.reason
        assert len(openmrs.requests_to("GET", "patient")) == 2  # a read is tried again

        started = time.monotonic()
        with pytest.raises(OpenMRSUnavailable):
            await create_weight(client, patient)
        assert time.monotonic() - started < 1.5
        assert len(openmrs.requests_to("POST", "obs")) == 1  # it may have been created


async def test_a_dead_port_is_unavailable():
    async with make_client(f"http://127.0.0.1:{free_port()}/openmrs") as client:
        started = time.monotonic()
        with pytest.raises(OpenMRSUnavailable) as raised:
            await client.find_patient("10001A")
        with pytest.raises(OpenMRSUnavailable):
            await create_weight(client, "b52ec6f9-0e26-424c-a4a1-c64f9d571eb3")
        with pytest.raises(OpenMRSUnavailable):
            await client.check()
    assert time.monotonic() - started < 3
    assert raised.value.reason == "OpenMRS cannot be reached"
    assert raised.value.status is None


# --- secrets and logs ------------------------------------------------------------------------


@pytest.fixture
def log_text():
    """Everything logged while the test runs, at DEBUG, as the service configures its logs
    (httpx's own URL lines stay off: its query strings hold identifiers)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("DEBUG")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]
    yield stream.getvalue
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def test_credentials_are_absent_from_repr_errors_and_logs(openmrs, log_text):
    patient = openmrs.add_patient("10001A")
    errors: list[OpenMRSError] = []
    async with make_client(openmrs.base_url) as client:
        assert await client.find_patient("10001A") == patient
        openmrs.fail_next(500, times=10)
        with pytest.raises(OpenMRSUnavailable) as raised:
            await client.find_patient("10001A")
        errors.append(raised.value)
        openmrs.reset()
        openmrs.delay(5)
        with pytest.raises(OpenMRSUnavailable) as raised:
            await create_weight(client, patient)
        errors.append(raised.value)
        shown = repr(client)
    openmrs.reset()
    async with make_client(openmrs.base_url, password=PASSWORD + "-wrong") as wrong:
        with pytest.raises(OpenMRSAuthError) as raised:
            await wrong.find_patient("10001A")
        errors.append(raised.value)
        with pytest.raises(OpenMRSAuthError) as raised:
            await wrong.check()
        errors.append(raised.value)
    async with make_client(f"http://127.0.0.1:{free_port()}/openmrs") as dead:
        with pytest.raises(OpenMRSUnavailable) as raised:
            await dead.find_patient("10001A")
        errors.append(raised.value)

    text = log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "openmrs call"]
    assert [call["outcome"] for call in calls] == [
        200,
        500,
        "OpenMRSUnavailable",
        401,
        200,
        "OpenMRSUnavailable",
    ]
    assert calls[1]["attempts"] == 3 and calls[1]["resource"] == "patient"
    assert calls[2]["method"] == "POST" and calls[2]["attempts"] == 1
    for secret in (PASSWORD, BASIC_TOKEN, "10001A"):
        assert secret not in text
    assert PASSWORD not in shown and USERNAME not in shown
    for error in errors:
        for said in (str(error), repr(error), error.reason):
            assert PASSWORD not in said and BASIC_TOKEN not in said
            assert "127.0.0.1" not in said


async def test_an_echoed_password_is_struck_from_openmrs_words(openmrs):
    """A server that quotes the request back (a proxy, a debug setting) leaks nothing."""

    def echoing(request: httpx.Request) -> httpx.Response:
        said = f"Refused {request.headers['authorization']} for {PASSWORD} at {request.url.host}"
        return httpx.Response(400, json={"error": {"message": said, "code": "", "detail": ""}})

    async with OpenMRSClient(
        "http://openmrs.internal:8080/openmrs",
        username=USERNAME,
        password=PASSWORD,
        transport=httpx.MockTransport(echoing),
    ) as client:
        with pytest.raises(OpenMRSRequestError) as raised:
            await client.find_patient("10001A")
    assert PASSWORD not in raised.value.reason
    assert BASIC_TOKEN not in raised.value.reason
    assert "openmrs.internal" not in raised.value.reason
    assert raised.value.reason.startswith("Refused Basic ***")


async def test_the_double_uses_its_own_path_and_cookie(openmrs):
    """The REST root is under the context path, and the cookie is scoped to it as Tomcat does."""
    async with httpx.AsyncClient(auth=(USERNAME, PASSWORD)) as http:
        answer = await http.get(f"{openmrs.base_url}/ws/rest/v1/session")
    assert answer.json()["authenticated"] is True
    assert "Path=/openmrs" in answer.headers["set-cookie"]
    assert openmrs.requests[0].path == f"{REST}/session"


# --- looking before creating again -----------------------------------------------------------


async def test_a_lost_answer_is_unavailable_and_the_obs_is_found_by_its_comment(
    client, openmrs, monkeypatch
):
    from app.clients import openmrs as module

    monkeypatch.setattr(module, "OBS_PAGE_SIZE", 2)  # five obs: three pages
    person = openmrs.add_patient("10001A")
    other = openmrs.add_patient("10002B")
    for index in range(4):
        await create_weight(client, person, comment=f"weight {index}")
    await create_weight(client, other, comment="record r-1")
    openmrs.lose_next_answers()
    with pytest.raises(OpenMRSUnavailable):
        await create_weight(client, person, comment="weighed; record r-1")
    assert len(openmrs.obs) == 6  # it was created all the same

    found = await client.find_obs(
        person_uuid=person, concept_uuid=CONCEPT_UUID, comment_ending="record r-1"
    )
    assert found == openmrs.obs[-1]["uuid"]
    assert openmrs.requests_to("GET", "obs")[-1].query["startIndex"] == "4"
    missing = await client.find_obs(
        person_uuid=person, concept_uuid=CONCEPT_UUID, comment_ending="record r-2"
    )
    assert missing is None
