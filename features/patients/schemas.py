import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.validation import NoControlCharacters

SORTABLE_FIELDS = (
    "mrn",
    "given_name",
    "family_name",
    "birth_date",
    "sex",
    "created_at",
    "updated_at",
)


class Sex(StrEnum):
    """FHIR AdministrativeGender."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


def _not_in_future(value: date) -> date:
    if value > date.today():
        raise ValueError("birth_date cannot be in the future")
    if value.year < 1880:
        raise ValueError("birth_date is implausibly early (before 1880)")
    return value


HumanName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    NoControlCharacters,
]
BirthDate = Annotated[date, AfterValidator(_not_in_future)]
Mrn = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"),
    Field(description="Medical record number; generated (MRN00000001, ...) when not given."),
]


class PatientBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given_name: HumanName
    family_name: HumanName
    birth_date: BirthDate
    sex: Sex


class PatientCreate(PatientBase):
    mrn: Mrn | None = None


class PatientUpdate(PatientBase):
    """A full replacement of the demographics. The MRN and id never change."""


class PatientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: Sex
    version: int = Field(description="Increases with every change; the ETag carries it.")
    created_at: datetime
    updated_at: datetime


def parse_sort(value: str) -> list[tuple[str, bool]]:
    """`family_name,-birth_date` -> [("family_name", False), ("birth_date", True)]."""
    keys: list[tuple[str, bool]] = []
    for raw in value.split(","):
        item = raw.strip()
        descending = item.startswith("-")
        name = item.lstrip("-+")
        if name not in SORTABLE_FIELDS:
            raise ValueError(
                f"unknown sort field {name!r}; allowed: {', '.join(SORTABLE_FIELDS)} "
                "(prefix with '-' for descending)"
            )
        if any(existing == name for existing, _ in keys):
            raise ValueError(f"sort field {name!r} is given twice")
        keys.append((name, descending))
    return keys
