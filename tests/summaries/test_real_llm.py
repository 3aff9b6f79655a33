"""A summary written by a real OpenAI-compatible server (llama.cpp with SmolLM2-135M).

The model is far too small to summarise well, so the test holds what must be true whatever it
answers: the summary answers, every allergy of the notes is in it, each item cites text that
is in its note, and nothing the grounding refused is listed. Skipped with the reason when the
server cannot be built (tests/llm_server.py).
"""

import pytest

from app.clients.llm import LLMClient
from tests.conftest import patient_body
from tests.summaries.test_router import ADMISSION, DISCHARGE, add_note, summary_url

# A 135M model on one thread: about 150 prompt tokens a second (README, "Summaries with a
# local LLM"); two short notes make a prompt of well under 2,000 tokens.
CALL_TIMEOUT_S = 120.0


@pytest.fixture
async def real_llm(app, llama_server):
    runtime = app.state.runtime
    original = runtime.llm
    client = LLMClient(
        api_key=llama_server.api_key,
        base_url=llama_server.base_url,
        model=llama_server.model,
        timeout_s=CALL_TIMEOUT_S,
        max_retries=0,
    )
    runtime.llm = client
    yield client
    runtime.llm = original
    await client.aclose()


async def test_a_real_llms_summary_holds_only_what_the_notes_say(client, clinician, real_llm):
    body = patient_body(given_name="Ada", family_name="Lovelace", birth_date="1952-12-10")
    patient = (await client.post("/patients", json=body, headers=clinician.headers)).json()
    notes = {
        note["id"]: note["content"]
        for note in [
            await add_note(client, clinician, patient, ADMISSION, "2026-02-01T10:00:00Z"),
            await add_note(client, clinician, patient, DISCHARGE, "2026-02-05T15:00:00Z"),
        ]
    }
    response = await client.get(summary_url(patient), headers=clinician.headers)
    assert response.status_code == 200, response.text
    summary = response.json()
    generator = summary["generator"]
    assert generator["kind"] in ("llm", "extractive")
    if generator["kind"] == "extractive":
        assert generator["fallback_reason"], generator  # and it says why
    else:
        assert generator["model"] == real_llm.model

    info = summary["key_information"]
    assert [a["substance"].lower() for a in info["allergies"]] == ["penicillin"]
    assert info["no_known_allergies"] is False
    named_by_llm_alone = set()
    for kind in ("diagnoses", "medications", "allergies"):
        for item in info[kind]:
            if "notes" not in item["found_by"]:
                named_by_llm_alone.add((item.get("name") or item.get("substance")).lower())
            assert item["citations"], item
            for citation in item["citations"]:
                text = notes[citation["note_id"]]
                assert text[citation["start"] : citation["end"]] == citation["text"]
    refused = {fact["name"].lower() for fact in summary["unsupported_facts"]}
    assert not refused & named_by_llm_alone, (refused, named_by_llm_alone)
