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


class CitedDiagnosis(BaseModel):
    name: str
    note_ids: list[uuid.UUID]


class CitedMedication(BaseModel):
    name: str
    dose: str | None = None
    route: str | None = None
    frequency: str | None = None
    note_ids: list[uuid.UUID]


class CitedAllergy(BaseModel):
    substance: str
    reaction: str | None = None
    note_ids: list[uuid.UUID]


class CitedVitalSign(BaseModel):
    kind: str
    value: float
    value_2: float | None = Field(default=None, description="Diastolic, for blood pressure.")
    unit: str
    taken_at: datetime
    note_ids: list[uuid.UUID]


class KeyInformation(BaseModel):
    diagnoses: list[CitedDiagnosis]
    medications: list[CitedMedication]
    allergies: list[CitedAllergy]
    no_known_allergies: bool
    latest_vital_signs: list[CitedVitalSign]


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


class SummaryRead(SummaryHead, SummaryBody):
    pass


# What the LLM must answer (validated; anything else falls back to the extractive summary).
class LLMDiagnosis(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    note_ids: list[str] = Field(min_length=1)


class LLMMedication(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    dose: str | None
    route: str | None
    frequency: str | None
    note_ids: list[str] = Field(min_length=1)


class LLMAllergy(BaseModel):
    substance: str = Field(min_length=1, max_length=200)
    reaction: str | None
    note_ids: list[str] = Field(min_length=1)


class LLMSummary(BaseModel):
    summary: str = Field(min_length=1, max_length=20_000)
    diagnoses: list[LLMDiagnosis]
    medications: list[LLMMedication]
    allergies: list[LLMAllergy]
