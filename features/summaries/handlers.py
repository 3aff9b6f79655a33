import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Text, and_, cast, func, literal, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.clients.llm import LLMClient, LLMError
from app.db import DirectStatements
from app.security import Principal, TokenClaims
from features.notes import handlers as notes
from features.patients import handlers as patients
from features.summaries import extractive, grounding, prompt
from features.summaries.deidentify import Deidentifier
from features.summaries.models import CachedSummary
from features.summaries.schemas import (
    Audience,
    Length,
    LLMSummary,
    SummaryBody,
    SummaryHead,
    SummaryPatient,
)

log = structlog.get_logger(__name__)
MAX_OUTPUT_TOKENS = {"brief": 600, "standard": 1200, "detailed": 2500}
# Fallbacks caused by a passing failure are not cached: the next request tries the LLM again.
NO_LLM = "no LLM is configured (OPENAI_API_KEY is not set)"
NO_NOTES = "the patient has no notes"
CACHEABLE_FALLBACKS = frozenset({None, NO_LLM, NO_NOTES})


def age_on(birth_date: date, today: date) -> int:
    return (
        today.year
        - birth_date.year
        - ((today.month, today.day) < (birth_date.month, birth_date.day))
    )


def _patient_block(
    *, given_name: str, family_name: str, birth_date: date, sex: str, mrn: str, **_: Any
) -> tuple[SummaryPatient, str]:
    block = SummaryPatient(
        name=f"{given_name} {family_name}",
        age=age_on(birth_date, datetime.now(UTC).date()),
        sex=sex,
        mrn=mrn,
        birth_date=birth_date,
    )
    heading = (
        f"{block.name}, {block.age} y, {block.sex}, MRN {block.mrn}, "
        f"born {block.birth_date.isoformat()}"
    )
    return block, heading


def _options_key(audience: Audience, length: Length, since: datetime | None) -> str:
    return f"{audience}|{length}|{since.astimezone(UTC).isoformat() if since else ''}"


async def _cached(
    session: AsyncSession,
    patient_id: uuid.UUID,
    options_key: str,
    generator_id: str,
    *,
    refresh: bool,
) -> tuple[str, str | None]:
    """(the fingerprint of what a summary would be made from now: the generator and the
    version of the patient's notes; the cached summary's JSON if one was made from exactly
    that), in one round trip."""
    fingerprint = _fingerprint(generator_id, patient_id).label("fingerprint")
    # MATERIALIZED: computed once, not once per use.
    current = select(fingerprint).cte("current").prefix_with("MATERIALIZED")
    query = select(
        current.c.fingerprint,
        literal(None, Text) if refresh else cast(CachedSummary.body, Text),
    ).outerjoin(
        CachedSummary,
        and_(
            CachedSummary.patient_id == patient_id,
            CachedSummary.options_key == options_key,
            CachedSummary.notes_fingerprint == current.c.fingerprint,
        ),
    )
    row = (await session.execute(query.select_from(current))).one()
    return row[0], row[1]


def _fingerprint(generator_id: Any, patient_id: Any) -> ColumnElement[str]:
    """What a summary is made from: its generator and the version of the patient's notes."""
    return func.concat(generator_id, "|", notes.notes_version(patient_id))


def _generator_id(llm: LLMClient) -> str:
    return f"llm:{llm.model}" if llm.enabled else "extractive"


def _to_facts(note: Any) -> extractive.NoteFacts:
    return extractive.NoteFacts(
        id=note.id,
        taken_at=note.taken_at,
        note_type=note.note_type,
        facts=note.facts,
        highlights=note.highlights,
        content_chars=note.content_chars,
    )


ANSWER_NOT_GROUNDED = "the LLM's text named facts the notes do not bear out"


def _text_only_medications(
    summary: str, key_information: dict[str, Any]
) -> list[grounding.Unsupported]:
    """Drugs the LLM's text names that no note records: an invented or injected medication
    that its lists left out still must not reach the clinician."""
    known = [item["name"] for item in key_information["medications"]]
    known += [item["substance"] for item in key_information["allergies"]]
    return [
        grounding.Unsupported("medication", name, None, None, "only_in_text")
        for name in notes.medications_named(summary)
        if not any(notes.same_drug(name, other) for other in known)
    ]


async def _grounded(
    answer: LLMSummary,
    entries: list[dict[str, Any]],
    notes_facts: list[extractive.NoteFacts],
    texts: dict[uuid.UUID, str],
    load_texts: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, str]]],
    key_info: dict[str, Any],
) -> tuple[grounding.Merged, list[grounding.Unsupported]]:
    """The answer's facts checked against the notes they cite and joined with the notes' own;
    and what was left out as unsupported."""
    sent = {entry["id"] for entry in entries}
    missing = [n.id for n in notes_facts if str(n.id) in sent and n.id not in texts]
    if missing:  # notes sent as their facts: their quotes are checked against the text too
        texts = {**texts, **await load_texts(missing)}
    evidence = [
        grounding.NoteEvidence(str(n.id), texts.get(n.id, ""), n.facts)
        for n in notes_facts
        if str(n.id) in sent
    ]
    checked = grounding.check_answer(answer, evidence, notes.same_drug)
    merged = grounding.merge(checked, answer, key_info, notes.same_drug)
    unsupported = checked.unsupported + _text_only_medications(
        answer.summary, merged.key_information
    )
    return merged, unsupported


async def _generate(
    llm: LLMClient,
    notes_facts: list[extractive.NoteFacts],
    subject: extractive.Subject,
    load_texts: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, str]]],
    *,
    audience: Audience,
    length: Length,
    max_input_tokens: int,
    deidentifier: Deidentifier,
) -> dict[str, Any]:
    """The summary body (without the patient block): from the LLM, or else extractive."""
    started = time.perf_counter()
    key_info = extractive.key_information(notes_facts)
    sources = [
        {"id": str(n.id), "taken_at": n.taken_at.isoformat(), "note_type": n.note_type}
        for n in notes_facts
    ]
    fallback_reason = None
    unsupported: list[grounding.Unsupported] = []
    if not notes_facts:
        fallback_reason = NO_NOTES
    elif not llm.enabled:
        fallback_reason = NO_LLM
    else:
        plan = prompt.fit_notes(notes_facts, max_input_tokens)
        text_ids = [n.id for n, sent_as in zip(notes_facts, plan, strict=True) if sent_as == "text"]
        texts = await load_texts(text_ids)
        entries = [
            prompt.entry(note, sent_as, texts.get(note.id))
            for note, sent_as in zip(notes_facts, plan, strict=True)
            if sent_as != "none"
        ]
        context: dict[str, Any] = {"age": subject.age, "sex": subject.sex}
        if audience == "family":
            context["first_name"] = deidentifier.scrub(subject.given_name)
        messages = prompt.build_messages(
            deidentifier.scrub_all(entries, keep=prompt.ENTRY_KEYS),
            audience=audience,
            length=length,
            patient_context=context,
        )
        try:
            result = await llm.complete_json(
                messages=messages,
                schema_name="patient_summary",
                output_model=LLMSummary,
                max_output_tokens=MAX_OUTPUT_TOKENS[length],
            )
            answer = LLMSummary.model_validate(deidentifier.restore_all(result.value.model_dump()))
            merged, unsupported = await _grounded(
                answer, entries, notes_facts, texts, load_texts, key_info
            )
        except LLMError as exc:
            fallback_reason = f"the LLM failed: {exc.reason}"
            log.warning("summary.llm_fallback", reason=exc.reason)
        else:
            if grounding.named_in_text(answer.summary, unsupported) or any(
                fact.reason == "only_in_text" for fact in unsupported
            ):
                fallback_reason = ANSWER_NOT_GROUNDED
                log.warning("summary.llm_fallback", reason=fallback_reason)
            else:
                for source, sent_as in zip(sources, plan, strict=True):
                    source["sent_as"] = sent_as
                return {
                    "summary": merged.summary,
                    # Vital signs come from the extracted data: exact values with their dates.
                    "key_information": merged.key_information,
                    "sources": sources,
                    "generator": {
                        "kind": "llm",
                        "model": result.model,
                        "duration_ms": result.duration_ms,
                        "fallback_reason": None,
                    },
                    "unsupported_facts": [fact.to_dict() for fact in unsupported],
                    "disagreements": merged.disagreements,
                }
    for source in sources:
        source["sent_as"] = "none"
    summary = extractive.narrative(notes_facts, key_info, subject, audience=audience, length=length)
    return {
        "summary": summary,
        "key_information": key_info,
        "sources": sources,
        "generator": {
            "kind": "extractive",
            "model": None,
            "duration_ms": round((time.perf_counter() - started) * 1000),
            "fallback_reason": fallback_reason,
        },
        "unsupported_facts": [fact.to_dict() for fact in unsupported],
    }


async def summarise_patient(
    session: AsyncSession,
    actor: Principal,
    llm: LLMClient,
    patient_id: uuid.UUID,
    *,
    audience: Audience,
    length: Length,
    since: datetime | None,
    refresh: bool,
    max_input_tokens: int,
    deidentify: bool = True,
) -> str:
    """The summary as `SummaryRead` JSON text.

    Text, not a model: a cached summary goes from the database to the client without being
    parsed, validated and serialised again (it was validated once, when it was made)."""
    patient = await patients.get_patient(session, actor, patient_id, audited_action="summary.read")
    block, heading = _patient_block(
        given_name=patient.given_name,
        family_name=patient.family_name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        mrn=patient.mrn,
    )
    options_key = _options_key(audience, length, since)
    fingerprint, body_json = await _cached(
        session, patient_id, options_key, _generator_id(llm), refresh=refresh
    )
    cached = body_json is not None
    if body_json is None:
        rows = await notes.notes_for_summary(session, patient_id, since)
        notes_facts = [_to_facts(row) for row in rows]
        subject = extractive.Subject(given_name=patient.given_name, age=block.age, sex=patient.sex)
        generated = await _generate(
            llm,
            notes_facts,
            subject,
            lambda ids: notes.note_texts(session, patient_id, ids),
            audience=audience,
            length=length,
            max_input_tokens=max_input_tokens,
            deidentifier=Deidentifier(
                given_name=patient.given_name,
                family_name=patient.family_name,
                mrn=patient.mrn,
                birth_date=patient.birth_date,
                enabled=deidentify,
            ),
        )
        body = SummaryBody.model_validate({**generated, "generated_at": datetime.now(UTC)})
        body_json = body.model_dump_json()
        if body.generator.fallback_reason in CACHEABLE_FALLBACKS:
            await _store(session, patient_id, options_key, fingerprint, body_json)

    await audit.record(
        session,
        actor=actor,
        action="summary.read",
        patient_id=patient_id,
        resource_type="Summary",
        detail=_audit_detail(audience, length, cached=cached),
    )
    head = SummaryHead(
        patient=block, heading=heading, audience=audience, length=length, since=since, cached=cached
    )
    return _joined(head, body_json)


def _audit_detail(audience: Audience, length: Length, *, cached: bool) -> str:
    return f"{audience}/{length}; cached={cached}"


def _joined(head: SummaryHead, body_json: str) -> str:
    """Two JSON objects made one: {head...} + {body...} -> {head..., body...}."""
    return head.model_dump_json()[:-1] + "," + body_json.lstrip()[1:]


# A cached summary in one statement and one round trip (see patients.audited_read_sql): the
# account, the care-team check, the patient, the cached summary if it was made from the notes
# as they are now, and, when it was, the audit event. A miss is audited where it is made.
_FINGERPRINT = _fingerprint(literal_column("$8::text"), literal_column("$3")).compile(
    dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
)
_READ_CACHED = patients.audited_read_sql(
    "summary.read",
    resource_type="Summary",
    more=f""", cached AS (
    SELECT s.body::text AS body
    FROM patient_summaries s
    WHERE s.patient_id = $3 AND s.options_key = $7::text AND EXISTS (SELECT FROM found)
      AND s.notes_fingerprint = {_FINGERPRINT}
)""",  # noqa: S608 (a compiled constant; values are parameters)
    also_select=", (SELECT body FROM cached) AS cached_body",
    audit_success_if="EXISTS (SELECT FROM cached)",
    success_detail="$9::text",
)


async def cached_summary(
    db: DirectStatements,
    token: TokenClaims,
    llm: LLMClient,
    patient_id: uuid.UUID,
    *,
    audience: Audience,
    length: Length,
    since: datetime | None,
) -> str | None:
    """The cached summary as `SummaryRead` JSON text, or None when there is none to reuse
    (summarise_patient() then makes one). 401, 403 and 404 as every route."""
    row = await patients.run_audited_read(
        db,
        _READ_CACHED,
        token,
        patient_id,
        _options_key(audience, length, since),
        _generator_id(llm),
        _audit_detail(audience, length, cached=True),
    )
    if row["cached_body"] is None:
        return None
    block, heading = _patient_block(**row)
    head = SummaryHead(
        patient=block, heading=heading, audience=audience, length=length, since=since, cached=True
    )
    return _joined(head, row["cached_body"])


async def _store(
    session: AsyncSession,
    patient_id: uuid.UUID,
    options_key: str,
    fingerprint: str,
    body_json: str,
) -> None:
    statement = insert(CachedSummary).values(
        id=uuid.uuid4(),
        patient_id=patient_id,
        options_key=options_key,
        notes_fingerprint=fingerprint,
        body=cast(literal(body_json, Text), JSONB),
    )
    await session.execute(
        statement.on_conflict_do_update(
            constraint="uq_patient_summaries_patient_id",
            set_={
                "notes_fingerprint": statement.excluded.notes_fingerprint,
                "body": statement.excluded.body,
                "generated_at": func.now(),
            },
        )
    )
