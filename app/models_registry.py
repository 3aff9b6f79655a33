"""Imports every feature's models, so that Base.metadata (and Alembic) sees all tables."""

from app import audit as audit_models
from app.db import Base
from features.auth import models as auth_models
from features.csv_ingest import models as csv_ingest_models
from features.fhir_flatten.store import models as fhir_flatten_models
from features.notes import models as notes_models
from features.patients import models as patients_models
from features.summaries import models as summaries_models
from features.tm2_ingest import models as tm2_ingest_models

__all__ = [
    "Base",
    "audit_models",
    "auth_models",
    "csv_ingest_models",
    "fhir_flatten_models",
    "notes_models",
    "patients_models",
    "summaries_models",
    "tm2_ingest_models",
]
