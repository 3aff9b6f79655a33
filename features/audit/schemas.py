import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    occurred_at: datetime
    user_id: uuid.UUID | None
    user_role: str | None
    action: str
    outcome: str
    patient_id: uuid.UUID | None
    resource_type: str | None
    resource_id: str | None
    request_id: str | None
    detail: str | None
