import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

Audience = Literal["clinician", "family", "patient"]
Length = Literal["brief", "standard", "detailed"]


class SummaryPatient(BaseModel):
    name: str
    age: int = Field(description="In whole years, today.")
    sex: str
    mrn: str
    birth_date: date


FoundBy = Literal["llm", "notes"]


class Citation(BaseModel):
    """Where in a note an item was read: `note_text[start:end] == text`."""

    note_id: uuid.UUID
    start: int
    end: int
    text: str


class CitedDiagnosis(BaseModel):
    name: str
    status: Literal["current", "historical"] = Field(
        default="current",
        description="current: a problem the patient has now; historical: past history. "
        "Findings a note denies, rules out, calls possible or gives of a relative are never "
        "listed.",
    )
    note_ids: list[uuid.UUID]
    citations: list[Citation] = []
    found_by: list[FoundBy] = Field(
        default=["notes"],
        description="Who named the item: the LLM (its quote checked against the note), the "
        "rules that read the notes, or both.",
    )


class CitedMedication(BaseModel):
    name: str = Field(description="The generic name where the notes' drug table knows it.")
    brand: str | None = Field(default=None, description="The brand name, as the note said it.")
    dose: str | None = Field(default=None, description="The latest dose.")
    route: str | None = None
    frequency: str | None = None
    change: str | None = Field(
        default=None,
        description="What changed: started, increased, decreased, stopped, continued, or "
        "changed (another dose in a later note).",
    )
    previous_dose: str | None = None
    note_ids: list[uuid.UUID]
    citations: list[Citation] = []
    found_by: list[FoundBy] = ["notes"]


class CitedAllergy(BaseModel):
    substance: str
    reaction: str | None = None
    note_ids: list[uuid.UUID]
    citations: list[Citation] = []
    found_by: list[FoundBy] = ["notes"]


class CitedVitalSign(BaseModel):
    kind: str
    value: float
    value_2: float | None = Field(default=None, description="Diastolic, for blood pressure.")
    unit: str
    taken_at: datetime
    note_ids: list[uuid.UUID]
    citations: list[Citation] = []


class CitedPlanItem(BaseModel):
    text: str = Field(description="One item of the most recent plan, as the note words it.")
    taken_at: datetime
    note_ids: list[uuid.UUID]
    citations: list[Citation] = []


class KeyInformation(BaseModel):
    """The handover: each item cites its notes and the span of text it was read from."""

    diagnoses: list[CitedDiagnosis] = Field(description="Current problems.")
    past_problems: list[CitedDiagnosis] = []
    medications: list[CitedMedication]
    allergies: list[CitedAllergy]
    no_known_allergies: bool
    latest_vital_signs: list[CitedVitalSign]
    plan: list[CitedPlanItem] = Field(default=[], description="The latest note's plan.")


FactKind = Literal["diagnosis", "medication", "allergy"]


class UnsupportedFact(BaseModel):
    """An item the LLM named that the cited note does not bear out: left out of the summary."""

    kind: FactKind
    name: str
    note_id: str | None = Field(description="The note it cited, as the LLM wrote the id.")
    quote: str | None
    reason: Literal[
        "note_not_given", "quote_not_in_note", "not_in_quote", "negated_in_note", "only_in_text"
    ] = Field(
        description="note_not_given: it cites a note the LLM was not sent; quote_not_in_note: "
        "its quote is not in the note (after normalising whitespace and case); not_in_quote: "
        "the quote is in the note but does not name it; negated_in_note: the note denies or "
        "rules it out; only_in_text: the LLM's text names it, with no citation at all."
    )


class Disagreement(BaseModel):
    """The LLM and the notes disagree; the summary shows what the notes say."""

    kind: FactKind
    name: str
    issue: Literal["omitted_by_llm", "contradicted_by_llm", "differs_from_notes"]
    detail: str


class SummarySource(BaseModel):
    id: uuid.UUID
    taken_at: datetime
    note_type: str
    sent_as: Literal["text", "facts", "none"] = Field(
        default="text",
        description="How the note reached the LLM: whole, as its extracted facts (over the "
        "token budget), or not at all (the extractive summariser reads every note).",
    )


class Generator(BaseModel):
    kind: Literal["llm", "extractive"]
    model: str | None
    duration_ms: int
    fallback_reason: str | None = Field(
        description="Why the extractive summariser wrote this instead of the LLM."
    )


class SummaryHead(BaseModel):
    """Made for every request (the patient's details may have changed since)."""

    patient: SummaryPatient
    heading: str
    audience: Audience
    length: Length
    since: datetime | None
    cached: bool = Field(description="True when this summary was stored by an earlier request.")


class SummaryBody(BaseModel):
    """What is generated, and cached, for a patient, options and notes."""

    summary: str
    key_information: KeyInformation
    sources: list[SummarySource]
    generator: Generator
    generated_at: datetime
    unsupported_facts: list[UnsupportedFact] = Field(
        default=[],
        description="What the LLM named that the notes do not bear out, and why: none of it is "
        "in the summary.",
    )
    disagreements: list[Disagreement] = Field(
        default=[],
        description="Where the LLM and the notes disagree (an allergy it left out, 'no known "
        "allergies' against a recorded one, another dose): the summary shows the notes' fact.",
    )


class SummaryRead(SummaryHead, SummaryBody):
    pass


# What the LLM must answer (validated; anything else falls back to the extractive summary).
class LLMCitation(BaseModel):
    note_id: str = Field(description="The id of the note, as given.")
    quote: str = Field(
        min_length=1,
        max_length=500,
        description="Words copied exactly from that note's text that state the item.",
    )


class LLMDiagnosis(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    citations: list[LLMCitation] = Field(min_length=1)


class LLMMedication(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    dose: str | None
    route: str | None
    frequency: str | None
    citations: list[LLMCitation] = Field(min_length=1)


class LLMAllergy(BaseModel):
    substance: str = Field(min_length=1, max_length=200)
    reaction: str | None
    citations: list[LLMCitation] = Field(min_length=1)


class LLMSummary(BaseModel):
    summary: str = Field(min_length=1, max_length=20_000)
    diagnoses: list[LLMDiagnosis]
    medications: list[LLMMedication]
    allergies: list[LLMAllergy]
    no_known_allergies: bool = Field(default=False, description="True only when a note says so.")
