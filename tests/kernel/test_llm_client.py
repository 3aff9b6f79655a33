"""The LLM client against a loopback double of the OpenAI API: the real SDK runs end to end."""

import io
import json
import logging
import socket
import time
from enum import StrEnum
from types import SimpleNamespace
from typing import Literal

import pytest
from pydantic import BaseModel, Field, SecretStr

from app.clients.llm import (
    NO_KEY_REASON,
    LLMClient,
    LLMError,
    LLMInvalidAnswer,
    LLMRateLimited,
    LLMRefused,
    LLMServerError,
    LLMTimeout,
    LLMUnavailable,
    StrictSchemaError,
    estimate_tokens,
    strict_json_schema,
)
from app.logging import configure_logging
from tests.doubles.openai_server import SNAPSHOT_SUFFIX, OpenAIDouble, strict_schema_problem

API_KEY = "sk-test-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"
MESSAGES = [
    {"role": "system", "content": "Summarise the notes as JSON."},
    {"role": "user", "content": "Blood pressure 150/95, started amlodipine 5 mg."},
]
# Short enough that a test stays fast, long enough that a loaded machine answers in time.
TIMEOUT_S = 0.5
# The double sends Retry-After of 10 ms, which the SDK honours instead of its 0.5 s backoff.
FAST_RETRY_S = 0.01


class Finding(BaseModel):
    text: str = Field(max_length=200)
    severity: Literal["low", "moderate", "high"]


class Summary(BaseModel):
    summary: str
    findings: list[Finding]
    follow_up: str | None = None


VALID_ANSWER = {
    "summary": "Hypertension, treatment started.",
    "findings": [{"text": "BP 150/95", "severity": "moderate"}],
    "follow_up": None,
}


@pytest.fixture(scope="module")
def double():
    with OpenAIDouble(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def llm_double(double):
    double.reset()
    yield double
    double.reset()


@pytest.fixture
async def llm(llm_double):
    async with LLMClient(
        api_key=API_KEY, base_url=llm_double.base_url, timeout_s=TIMEOUT_S, max_retries=2
    ) as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def ask(client: LLMClient, **overrides):
    arguments = {"messages": MESSAGES, "schema_name": "visit_summary", "output_model": Summary}
    return await client.complete_json(**{**arguments, **overrides})


# --- the happy path --------------------------------------------------------------------------


async def test_a_valid_structured_answer_is_parsed_and_validated(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    result = await ask(llm)
    assert result.value == Summary.model_validate(VALID_ANSWER)
    assert result.model == f"gpt-4o-mini{SNAPSHOT_SUFFIX}"
    assert result.usage is not None
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0
    assert 0 <= result.duration_ms < TIMEOUT_S * 1000
    assert llm_double.call_count == 1


async def test_the_request_asks_for_strict_json_schema_output_with_model_and_key(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    await ask(llm, max_output_tokens=300, temperature=0.1)
    [request] = llm_double.completion_requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == MESSAGES
    assert body["temperature"] == 0.1
    assert body["max_completion_tokens"] == 300
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "visit_summary"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"] == strict_json_schema(Summary)


async def test_the_answer_can_depend_on_the_request(llm, llm_double):
    llm_double.respond_with(
        lambda body: {**VALID_ANSWER, "summary": body["messages"][-1]["content"][:14]}
    )
    result = await ask(llm)
    assert result.value.summary == "Blood pressure"


# --- retries, deadlines and failures ---------------------------------------------------------


async def test_a_429_twice_then_success_succeeds_after_three_calls(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    llm_double.fail_with(429, times=2, retry_after=FAST_RETRY_S)
    result = await ask(llm)
    assert result.value.summary == VALID_ANSWER["summary"]
    assert llm_double.call_count == 3


async def test_a_persistent_429_is_rate_limited_after_all_retries(llm, llm_double):
    llm_double.fail_with(429, retry_after=FAST_RETRY_S)
    with pytest.raises(LLMRateLimited) as error:
        await ask(llm)
    assert llm_double.call_count == 3
    assert error.value.status == 429


async def test_a_persistent_500_is_a_server_error_after_one_call_and_max_retries(llm, llm_double):
    llm_double.fail_with(500, retry_after=FAST_RETRY_S)
    with pytest.raises(LLMServerError) as error:
        await ask(llm)
    assert llm_double.call_count == 1 + llm.max_retries
    assert "HTTP 500" in error.value.reason


async def test_a_slow_answer_times_out_within_about_the_timeout(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    llm_double.delay(5)
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await ask(llm)
    elapsed = time.monotonic() - started
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 0.4


async def test_retries_never_outlast_the_deadline_and_say_what_they_were_retrying(llm, llm_double):
    # The server asks for a 5 s wait, which the SDK would honour: the deadline cuts it short.
    llm_double.fail_with(429, retry_after=5)
    started = time.monotonic()
    with pytest.raises(LLMRateLimited):
        await ask(llm)
    assert time.monotonic() - started < TIMEOUT_S + 0.4
    assert llm_double.call_count == 1


async def test_a_400_is_refused_without_a_retry(llm, llm_double):
    llm_double.fail_with(400)
    with pytest.raises(LLMRefused) as error:
        await ask(llm)
    assert llm_double.call_count == 1
    assert error.value.status == 400


async def test_a_wrong_api_key_is_refused_and_named(llm_double):
    async with LLMClient(api_key="sk-wrong", base_url=llm_double.base_url) as client:
        with pytest.raises(LLMRefused) as error:
            await ask(client)
    assert "API key" in error.value.reason
    assert llm_double.call_count == 1


async def test_no_api_key_is_unavailable_without_any_call(llm_double):
    client = LLMClient(api_key=None, base_url=llm_double.base_url)
    assert client.enabled is False
    with pytest.raises(LLMUnavailable) as error:
        await ask(client)
    assert error.value.reason == NO_KEY_REASON
    with pytest.raises(LLMUnavailable):
        await client.check()
    assert llm_double.call_count == 0
    await client.aclose()


async def test_a_refused_connection_is_unavailable():
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    async with LLMClient(api_key=API_KEY, base_url=base_url, max_retries=0) as client:
        with pytest.raises(LLMUnavailable):
            await ask(client)


# --- unusable answers ------------------------------------------------------------------------


async def test_an_answer_that_is_not_json_is_invalid(llm, llm_double):
    llm_double.invalid_json()
    with pytest.raises(LLMInvalidAnswer, match="not valid JSON"):
        await ask(llm)
    assert llm_double.call_count == 1


@pytest.mark.parametrize(
    "answer",
    [
        {"summary": "ok", "findings": [{"text": "BP", "severity": "extreme"}], "follow_up": None},
        {"summary": "ok", "follow_up": None},
        {"summary": "ok", "findings": [{"text": "x" * 201, "severity": "low"}], "follow_up": None},
        ["not", "an", "object"],
    ],
    ids=["bad-enum", "missing-field", "too-long", "not-an-object"],
)
async def test_json_that_fails_the_schema_is_invalid(llm, llm_double, answer):
    llm_double.respond_with(json.dumps(answer))
    with pytest.raises(LLMInvalidAnswer, match="expected structure"):
        await ask(llm)


async def test_an_answer_cut_off_at_the_token_limit_is_invalid(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    llm_double.finish_reason_length()
    with pytest.raises(LLMInvalidAnswer, match="cut off"):
        await ask(llm, max_output_tokens=5)


async def test_a_refusal_from_the_model_is_refused(llm, llm_double):
    llm_double.refuse()
    with pytest.raises(LLMRefused, match="declined"):
        await ask(llm)


def test_every_failure_is_an_llm_error_with_a_short_reason():
    for error_type in (
        LLMUnavailable,
        LLMTimeout,
        LLMRateLimited,
        LLMServerError,
        LLMRefused,
        LLMInvalidAnswer,
    ):
        error = error_type()
        assert isinstance(error, LLMError)
        assert 0 < len(error.reason) <= 80
        assert str(error) == error.reason


# --- readiness -------------------------------------------------------------------------------


async def test_check_passes_when_the_models_endpoint_answers(llm, llm_double):
    await llm.check()
    [request] = llm_double.requests
    assert (request.method, request.path) == ("GET", "/v1/models")


async def test_check_fails_once_without_retrying_when_the_server_fails(llm, llm_double):
    llm_double.fail_with(503, retry_after=FAST_RETRY_S)
    with pytest.raises(LLMServerError):
        await llm.check()
    assert llm_double.call_count == 1


async def test_check_fails_when_nothing_listens():
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    async with LLMClient(api_key=API_KEY, base_url=base_url) as client:
        with pytest.raises(LLMUnavailable):
            await client.check()


# --- settings, schema, estimate --------------------------------------------------------------


async def test_from_settings_reads_the_openai_settings(llm_double):
    configured = SimpleNamespace(
        openai_api_key=SecretStr(API_KEY),
        openai_base_url=llm_double.base_url,
        openai_model="gpt-4o",
        llm_timeout_s=2.5,
        llm_max_retries=1,
    )
    async with LLMClient.from_settings(configured) as client:
        assert client.enabled
        assert (client.model, client.timeout_s, client.max_retries) == ("gpt-4o", 2.5, 1)
        assert client.base_url == llm_double.base_url + "/"
        assert API_KEY not in repr(vars(client))
    unconfigured = LLMClient.from_settings(SimpleNamespace())
    assert not unconfigured.enabled
    assert unconfigured.model == "gpt-4o-mini"


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Node(BaseModel):
    label: str
    child: "Node | None" = None


class Kitchen(BaseModel):
    colour: Colour = Field(description="The paint.")
    kind: Literal["kitchen"] = "kitchen"
    finding: Finding = Field(description="The main finding.")
    tree: Node
    when: str = Field(json_schema_extra={"format": "date"})
    website: str = Field(json_schema_extra={"format": "uri"})


def test_the_strict_schema_is_what_openai_accepts_in_strict_mode():
    schema = strict_json_schema(Kitchen)
    assert strict_schema_problem(schema) is None
    assert schema["required"] == list(Kitchen.model_fields)
    assert schema["properties"]["kind"]["enum"] == ["kitchen"]
    colour = schema["properties"]["colour"]
    assert (colour["enum"], colour["description"]) == (["red", "blue"], "The paint.")
    assert "default" not in schema["properties"]["kind"]
    # A $ref with a description is inlined; a recursive one stays a reference.
    finding = schema["properties"]["finding"]
    assert finding["description"] == "The main finding."
    assert finding["additionalProperties"] is False
    assert "maxLength" not in finding["properties"]["text"]
    assert schema["properties"]["tree"] == {"$ref": "#/$defs/Node"}
    assert schema["properties"]["when"]["format"] == "date"
    assert "format" not in schema["properties"]["website"]
    # The caller gets a copy: changing it does not change the next request.
    schema["properties"].clear()
    assert strict_json_schema(Kitchen)["properties"]


def test_the_double_refuses_a_schema_that_is_not_strict():
    loose = Summary.model_json_schema()
    assert "additionalProperties" in strict_schema_problem(loose)


class Mapping(BaseModel):
    scores: dict[str, int]


class Pair(BaseModel):
    pair: tuple[int, str]


@pytest.mark.parametrize("model", [Mapping, Pair])
def test_what_strict_mode_cannot_express_fails_loudly(model):
    with pytest.raises(StrictSchemaError):
        strict_json_schema(model)


async def test_a_bad_schema_name_is_a_programming_error(llm):
    with pytest.raises(ValueError, match="schema_name"):
        await ask(llm, schema_name="visit summary!")


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_estimate_tokens_is_about_four_characters_a_token_rounded_up(text, tokens):
    assert estimate_tokens(text) == tokens


# --- logs ------------------------------------------------------------------------------------


@pytest.fixture
def log_text():
    """Everything logged while the test runs, at DEBUG and in the service's JSON format."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("openai", "httpx", "httpcore")}
    configure_logging("DEBUG")
    for name in noisy:
        logging.getLogger(name).setLevel(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]
    yield stream.getvalue
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


async def test_one_line_per_call_without_the_key_or_the_messages(llm, llm_double, log_text):
    llm_double.respond_with(VALID_ANSWER)
    await ask(llm)
    llm_double.fail_with(401)
    with pytest.raises(LLMRefused):
        await ask(llm)
    text = log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "llm call"]
    assert [call["outcome"] for call in calls] == ["ok", "refused"]
    assert calls[0]["model"] == "gpt-4o-mini"
    assert calls[0]["served_model"] == f"gpt-4o-mini{SNAPSHOT_SUFFIX}"
    assert calls[0]["prompt_tokens"] > 0
    assert calls[0]["schema"] == "visit_summary"
    for secret in (API_KEY, "amlodipine", "Hypertension"):
        assert secret not in text


# --- servers that know only json_object (llama-cpp-python) -----------------------------------


def _format(request) -> str:
    return request.body["response_format"]["type"]


@pytest.mark.parametrize("status", [500, 400, 422])
async def test_a_refused_json_schema_is_asked_once_more_as_a_json_object(llm, llm_double, status):
    llm_double.refuse_json_schema(status)
    llm_double.respond_with(VALID_ANSWER)
    result = await ask(llm, max_output_tokens=300)
    assert result.value == Summary.model_validate(VALID_ANSWER)
    # No SDK retries of the refusal: one json_schema request, then one json_object request.
    first, second = llm_double.completion_requests
    assert (_format(first), _format(second)) == ("json_schema", "json_object")
    assert second.body["response_format"] == {"type": "json_object"}
    *asked, instruction = second.body["messages"]
    assert asked == MESSAGES
    assert instruction["role"] == "system"
    assert "one JSON object" in instruction["content"]
    schema = json.loads(instruction["content"].split("\n", 1)[1])
    assert set(schema["properties"]) == {"summary", "findings", "follow_up"}
    assert second.body["max_tokens"] == second.body["max_completion_tokens"] == 300
    assert llm.format_in_use == "json_object"


async def test_after_a_refusal_the_next_calls_go_straight_to_json_object(llm, llm_double):
    llm_double.refuse_json_schema()
    llm_double.respond_with(VALID_ANSWER)
    await ask(llm)
    await ask(llm)
    await ask(llm)
    formats = [_format(request) for request in llm_double.completion_requests]
    assert formats == ["json_schema", "json_object", "json_object", "json_object"]


async def test_once_json_schema_worked_a_refusal_falls_back_for_that_call_only(llm, llm_double):
    llm_double.respond_with(VALID_ANSWER)
    await ask(llm)
    llm_double.refuse_json_schema()
    await ask(llm)
    assert llm.format_in_use == "json_schema"
    formats = [_format(request) for request in llm_double.completion_requests]
    assert formats == ["json_schema", "json_schema", "json_object"]


async def test_an_ordinary_server_error_is_no_refusal_of_the_format(llm, llm_double):
    llm_double.fail_with(500, retry_after=FAST_RETRY_S)
    with pytest.raises(LLMServerError):
        await ask(llm)
    assert {_format(request) for request in llm_double.completion_requests} == {"json_schema"}
    assert llm.format_in_use == "json_schema"


async def test_a_json_object_answer_that_does_not_match_the_model_is_invalid(llm, llm_double):
    llm_double.refuse_json_schema()
    llm_double.respond_with({"summary": "ok", "findings": [{"text": "BP", "severity": "extreme"}]})
    with pytest.raises(LLMInvalidAnswer, match="expected structure"):
        await ask(llm)
    assert llm_double.call_count == 2


async def test_a_json_object_answer_that_is_not_json_is_invalid(llm, llm_double):
    llm_double.refuse_json_schema()
    llm_double.invalid_json()
    with pytest.raises(LLMInvalidAnswer, match="not valid JSON"):
        await ask(llm)


async def test_the_deadline_bounds_the_fallback_too(llm, llm_double):
    llm_double.refuse_json_schema()
    llm_double.respond_with(VALID_ANSWER)
    llm_double.delay(5)  # the refusal is immediate; the json_object answer is slow
    started = time.monotonic()
    with pytest.raises(LLMTimeout):
        await ask(llm)
    assert time.monotonic() - started < TIMEOUT_S + 0.4


async def test_forced_json_object_never_asks_for_json_schema(llm_double):
    llm_double.respond_with(VALID_ANSWER)
    async with LLMClient(
        api_key=API_KEY, base_url=llm_double.base_url, response_format="json_object"
    ) as client:
        result = await ask(client)
        llm_double.respond_with({"summary": "ok"})
        with pytest.raises(LLMInvalidAnswer, match="expected structure"):
            await ask(client)
    assert result.value.summary == VALID_ANSWER["summary"]
    assert [_format(r) for r in llm_double.completion_requests] == ["json_object"] * 2


async def test_forced_json_schema_never_falls_back_and_says_why(llm_double):
    llm_double.refuse_json_schema()
    llm_double.respond_with(VALID_ANSWER)
    async with LLMClient(
        api_key=API_KEY, base_url=llm_double.base_url, response_format="json_schema"
    ) as client:
        with pytest.raises(LLMRefused, match="does not take JSON schema") as error:
            await ask(client)
        assert client.format_in_use == "json_schema"
    assert error.value.status == 500
    assert llm_double.call_count == 1


def test_the_response_format_setting_is_read_and_checked(monkeypatch):
    from app.config import Settings

    monkeypatch.setenv("LLM_RESPONSE_FORMAT", "json_object")
    settings = Settings(_env_file=None)
    assert settings.llm_response_format == "json_object"
    client = LLMClient.from_settings(settings)
    assert (client.response_format, client.format_in_use) == ("json_object", "json_object")
    assert LLMClient.from_settings(SimpleNamespace()).response_format == "auto"
    monkeypatch.setenv("LLM_RESPONSE_FORMAT", "xml")
    with pytest.raises(ValueError, match="llm_response_format"):
        Settings(_env_file=None)
    with pytest.raises(ValueError, match="response_format"):
        LLMClient(api_key=None, response_format="xml")


async def test_the_log_line_says_which_response_format_answered(llm, llm_double, log_text):
    llm_double.refuse_json_schema()
    llm_double.respond_with(VALID_ANSWER)
    await ask(llm)
    await ask(llm)
    lines = [json.loads(line) for line in log_text().splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "llm call"]
    assert [(c["response_format"], c["format_fallback"]) for c in calls] == [
        ("json_object", True),
        ("json_object", False),
    ]
    assert calls[0]["statuses"] == [500, 200]
