import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RecordState = Literal["pending", "submitted", "failed"]


class RowProblem(BaseModel):
    row: int = Field(description="Row number as a spreadsheet shows it: the header is row 1.")
    column: str | None
    message: str
    severity: Literal["error", "warning"]


class UploadSummary(BaseModel):
    upload_id: uuid.UUID
    filename: str
    rows: int
    valid: int
    invalid: int
    duplicates: int = Field(description="Valid rows already stored (from this file or before).")
    stored: int = Field(description="Diagnoses stored by this upload.")
    problems: list[RowProblem] = Field(description="Per-row errors and warnings (at most 1000).")

    @classmethod
    def from_upload(cls, upload) -> "UploadSummary":
        return cls(
            upload_id=upload.id,
            filename=upload.filename,
            rows=upload.rows,
            valid=upload.valid,
            invalid=upload.invalid,
            duplicates=upload.duplicates,
            stored=upload.stored,
            problems=upload.problems,
        )


class LegacyIngestResult(BaseModel):
    status: Literal["completed"]
    summary: UploadSummary


class RecordRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    upload_id: uuid.UUID | None
    row_number: int
    patient_id: str
    code: str
    condition_name: str
    system_type: str
    severity: str
    diagnosis_date: date
    practitioner_id: str
    state: RecordState
    openmrs_uuid: str | None
    attempts: int
    error: str | None
    submitted_at: datetime | None
    created_at: datetime


class SubmissionRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    started_at: datetime
    finished_at: datetime | None
    submitted: int
    failed: int
    error: str | None
    records_per_second: float | None


class StatusRead(BaseModel):
    records: dict[str, int] = Field(description="Diagnoses by state.")
    uploads: int
    codes: int = Field(description="Codes in the TM2 code list.")
    last_run: SubmissionRunRead | None
    openmrs: str = Field(description="'ok', 'not configured', or 'down: <reason>'.")


class RetryResult(BaseModel):
    requeued: int
