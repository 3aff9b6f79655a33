import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

UploadStatus = Literal["queued", "processing", "completed", "completed_with_errors", "failed"]


class RowProblem(BaseModel):
    row: int = Field(description="Row number as a spreadsheet shows it: the header is row 1.")
    column: str | None
    message: str
    severity: Literal["error", "warning"]


class CsvUploadAccepted(BaseModel):
    id: uuid.UUID
    status: UploadStatus
    status_url: str = Field(description="Where to follow the upload: GET it.")


class LegacyUploadAccepted(BaseModel):
    file_id: uuid.UUID


class CsvUploadSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    filename: str
    size_bytes: int
    sha256: str
    status: UploadStatus
    rows_total: int
    rows_done: int = Field(description="Rows whose resources are on the FHIR server.")
    rows_failed: int = Field(
        description="Rows the FHIR server refused, or not sent: invalid rows included."
    )
    resources_created: int
    progress: float = Field(ge=0, le=1, description="Rows finished, as a fraction of all rows.")
    error: str | None = Field(description="Why the upload failed, or what it is waiting for.")
    uploaded_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None = Field(description="From upload to the last row, once finished.")


class CsvUploadRead(CsvUploadSummary):
    attempts: int = Field(description="Failed attempts in a row to reach the FHIR server.")
    problems: list[RowProblem] = Field(
        description="Per-row errors and warnings, in row order (at most 1000)."
    )
    problems_truncated: bool
