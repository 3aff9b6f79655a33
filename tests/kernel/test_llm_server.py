"""The LLM client against a real OpenAI-compatible server: llama-cpp-python with SmolLM2-135M.

The model is tiny, so the quality of its answers is not the point: the tests hold that the
protocol works, that the client finds the response format this server takes, and that every
answer ends as a schema-valid value or a clean `LLMError`. Skipped, with the reason, where the
server cannot be built (see tests/llm_server.py).

    .venv/bin/pytest tests/kernel/test_llm_server.py -q -s   # -s: prints the timings
"""

import time
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from app.clients.llm import LLMClient, LLMError, LLMInvalidAnswer, LLMRefused, LLMTimeout

pytestmark = pytest.mark.slow

# Generous: one thread on a loaded 2-core machine; the measured call is well under this.
CALL_TIMEOUT_S = 120.0


class Capital(BaseModel):
    city: str


class Finding(BaseModel):
    text: str = Field(max_length=200)
    severity: Literal["low", "moderate", "high"]


class VisitSummary(BaseModel):
    summary: str
    findings: list[Finding]
    follow_up: str | None = None


CAPITAL = [
    {"role": "user", "content": "What is the capital of France? Answer in JSON with key city."}
]
NOTE = [
    {"role": "system", "content": "You summarise clinical notes for a clinician."},
    {
        "role": "user",
        "content": "Note 2024-03-01: 62-year-old man. Blood pressure 150/95. "
        "Started amlodipine 5 mg daily. Review in 4 weeks.",
    },
]
CASES = {
    "capital": (CAPITAL, Capital, 40),
    "visit_summary": (NOTE, VisitSummary, 200),
}


def client_for(server, **options) -> LLMClient:
    return LLMClient(
        api_key=server.api_key,
        base_url=server.base_url,
        model=server.model,
        timeout_s=options.pop("timeout_s", CALL_TIMEOUT_S),
        **options,
    )


async def ask(client: LLMClient, case: str):
    messages, output_model, max_tokens = CASES[case]
    return await client.complete_json(
        messages=messages,
        schema_name=case,
        output_model=output_model,
        max_output_tokens=max_tokens,
    )


async def valid_or_clean_error(client: LLMClient, case: str):
    """The answer validated against the case's model, or the clean LLMInvalidAnswer."""
    output_model = CASES[case][1]
    try:
        result = await ask(client, case)
    except LLMInvalidAnswer as exc:
        assert exc.reason
        return exc
    assert isinstance(result.value, output_model)
    assert result.model == client.model
    return result


async def test_the_server_speaks_the_openai_protocol(llama_server):
    async with client_for(llama_server) as client:
        await client.check()
    sdk = openai.AsyncOpenAI(api_key=llama_server.api_key, base_url=llama_server.base_url)
    try:
        models = await sdk.models.list()
        assert llama_server.model in [model.id for model in models.data]
        completion = await sdk.chat.completions.create(
            model=llama_server.model, messages=CAPITAL, max_tokens=8, temperature=0
        )
    finally:
        await sdk.close()
    assert completion.object == "chat.completion"
    assert isinstance(completion.choices[0].message.content, str)
    assert 0 < completion.usage.completion_tokens <= 8
    wrong_key = openai.AsyncOpenAI(api_key="wrong", base_url=llama_server.base_url)
    try:
        with pytest.raises(openai.AuthenticationError):
            await wrong_key.models.list()
    finally:
        await wrong_key.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_auto_finds_the_format_the_server_takes(llama_server, case):
    async with client_for(llama_server) as client:
        assert client.format_in_use == "json_schema"
        await valid_or_clean_error(client, case)
        # llama-cpp-python knows only json_object: the client found out and keeps to it.
        assert client.format_in_use == "json_object"
        await valid_or_clean_error(client, case)


async def test_forced_json_schema_works_or_fails_cleanly(llama_server):
    async with client_for(llama_server, response_format="json_schema") as client:
        try:
            result = await ask(client, "capital")
        except LLMError as exc:
            assert isinstance(exc, LLMRefused)
            assert "JSON schema" in exc.reason
        else:
            assert isinstance(result.value, Capital)
        assert client.format_in_use == "json_schema"


@pytest.mark.parametrize("case", list(CASES))
async def test_forced_json_object_answers_are_validated(llama_server, case):
    async with client_for(llama_server, response_format="json_object") as client:
        await valid_or_clean_error(client, case)


async def test_one_call_with_one_thread_is_timed(llama_server):
    """Prints what a call costs on one CPU thread (the README quotes these figures)."""
    async with client_for(llama_server, response_format="json_object") as client:
        for case in CASES:
            max_tokens = CASES[case][2]
            durations = []
            for _ in range(3):
                started = time.monotonic()
                await valid_or_clean_error(client, case)
                durations.append(time.monotonic() - started)
            print(
                f"\n{case}: up to {max_tokens} output tokens, one thread: "
                f"{', '.join(f'{d:.2f} s' for d in durations)}"
            )
            assert max(durations) < CALL_TIMEOUT_S


async def test_a_very_short_timeout_is_a_timeout(llama_server):
    async with client_for(llama_server, response_format="json_object", timeout_s=0.05) as client:
        started = time.monotonic()
        with pytest.raises(LLMTimeout):
            await ask(client, "visit_summary")
        assert time.monotonic() - started < 0.5
