import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

NoteType = Literal["admission", "progress", "consult", "procedure", "discharge", "other"]
SoapPart = Literal["S", "O", "A", "P"]
# A note may be written a little ahead of the server's clock, not hours.
CLOCK_SKEW = timedelta(minutes=5)
MAX_CONTENT_CHARS = 500_000


def not_in_the_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return value


class NoteCreate(BaseModel):
    """A note written as text."""

    model_config = ConfigDict(extra="forbid")

    taken_at: AwareDatetime = Field(
        description="When the note was taken, with a time zone (2026-11-20T09:30:00+01:00)."
    )
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    note_type: NoteType | None = Field(
        default=None, description="Overrides the type the service would infer."
    )

    _taken_at_not_in_future = field_validator("taken_at")(not_in_the_future)

    @field_validator("content")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the note is empty")
        return value


class NoteUploadForm(BaseModel):
    """The form fields beside the uploaded file."""

    model_config = ConfigDict(extra="forbid")

    taken_at: AwareDatetime
    note_type: NoteType | None = None

    _taken_at_not_in_future = field_validator("taken_at")(not_in_the_future)


class SpanRead(BaseModel):
    start: int
    end: int


class SectionRead(BaseModel):
    heading: str | None
    soap: list[SoapPart] = Field(description="The SOAP parts the heading maps onto.")
    start: int
    end: int
    text: str


class VitalSignRead(BaseModel):
    kind: Literal[
        "blood_pressure",
        "heart_rate",
        "temperature",
        "respiratory_rate",
        "spo2",
        "weight",
        "height",
    ]
    value: float
    value_2: float | None = Field(description="The diastolic pressure, for blood pressure.")
    unit: str
    span: SpanRead
    text: str


class MedicationRead(BaseModel):
    name: str = Field(description="Generic name where the note names a known brand")
    dose: str | None = Field(description="The latest dose the note gives")
    route: str | None
    frequency: str | None
    span: SpanRead
    text: str
    brand: str | None = Field(default=None, description="The brand as the note wrote it")
    change: Literal["started", "increased", "decreased", "changed", "stopped"] | None = Field(
        default=None, description="What the note did to the drug (the plan's change)"
    )
    previous_dose: str | None = Field(default=None, description="The dose before the change")


class DiagnosisRead(BaseModel):
    name: str
    span: SpanRead
    text: str
    status: Literal["current", "historical", "negated", "family", "possible"] = Field(
        default="current",
        description="current: a problem the patient has now; historical: past history; "
        "negated: denied or ruled out; family: a relative's; possible: suspected, a "
        "differential or to be ruled out. Only current ones are problems in a summary.",
    )


class AllergyRead(BaseModel):
    substance: str
    reaction: str | None
    span: SpanRead
    text: str


class PlanItemRead(BaseModel):
    text: str = Field(description="A whole sentence of the note's plan")
    span: SpanRead


class FactsRead(BaseModel):
    """Structured data found in the note; each item keeps the span of text it came from."""

    vitals: list[VitalSignRead]
    medications: list[MedicationRead]
    diagnoses: list[DiagnosisRead]
    allergies: list[AllergyRead]
    no_known_allergies: bool
    plan: list[PlanItemRead] = Field(
        default_factory=list, description="Notes stored before plans were read have none"
    )


class NoteFileRead(BaseModel):
    name: str | None
    media_type: str
    size: int
    sha256: str


class ClassificationRead(BaseModel):
    note_type: NoteType
    source: Literal["uploader", "inferred"]
    evidence: list[str]


class NoteListItem(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    taken_at: datetime
    note_type: NoteType
    file: NoteFileRead | None
    extraction_method: Literal["json", "text", "pdf", "ocr"]
    preview: str = Field(description="The first characters of the text.")
    created_by: uuid.UUID | None
    created_at: datetime


class NoteRead(NoteListItem):
    content: str = Field(description="The note's text (extracted from the file for uploads).")
    classification: ClassificationRead
    sections: list[SectionRead]
    facts: FactsRead


class NoteFilters(BaseModel):
    patient_id: uuid.UUID | None = None
    note_type: NoteType | None = None
    taken_after: datetime | None = None
    taken_before: datetime | None = None
