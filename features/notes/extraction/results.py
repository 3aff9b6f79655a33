"""The analysis results: frozen, slotted dataclasses whose to_dict() is plain JSON."""

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal

SOAP = Literal["S", "O", "A", "P"]
NoteType = Literal["admission", "progress", "consult", "procedure", "discharge", "other"]
DiagnosisStatus = Literal["current", "historical", "negated", "family", "possible"]
VitalKind = Literal[
    "blood_pressure", "heart_rate", "temperature", "respiratory_rate", "spo2", "weight", "height"
]


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class Serialisable:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, str, int, float, bool and None: ready for `json.dumps`."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Span(Serialisable):
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Section(Serialisable):
    """A heading (as written, without colon or markdown marks) and its body.

    `start`/`end` delimit the body with surrounding blank space trimmed; `text` is that body.
    """

    heading: str | None
    soap: tuple[SOAP, ...]
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Classification(Serialisable):
    note_type: NoteType
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VitalSign(Serialisable):
    kind: VitalKind
    value: float
    value_2: float | None
    unit: str
    span: Span
    text: str


MedicationChange = Literal["started", "increased", "decreased", "changed", "stopped"]


@dataclass(frozen=True, slots=True)
class Medication(Serialisable):
    """A drug, by its generic name where the note names a known brand (`brand` keeps the name
    as written). `dose` is the latest the note gives; `change` and `previous_dose` say what the
    note changed ("metformin 500 mg ... increase metformin to 1000 mg")."""

    name: str
    dose: str | None
    route: str | None
    frequency: str | None
    span: Span
    text: str
    brand: str | None = None
    change: MedicationChange | None = None
    previous_dose: str | None = None


@dataclass(frozen=True, slots=True)
class Diagnosis(Serialisable):
    """A problem as written. Only a "current" one is the patient's problem now; the others
    (denied, a relative's, a differential, a resolved one) are kept so they can be shown as such.
    """

    name: str
    span: Span
    text: str
    status: DiagnosisStatus = "current"


@dataclass(frozen=True, slots=True)
class Allergy(Serialisable):
    substance: str
    reaction: str | None
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class PlanItem(Serialisable):
    """A whole sentence of the plan; `span` is its place in the note."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Facts(Serialisable):
    vitals: tuple[VitalSign, ...]
    medications: tuple[Medication, ...]
    diagnoses: tuple[Diagnosis, ...]
    allergies: tuple[Allergy, ...]
    no_known_allergies: bool
    plan: tuple[PlanItem, ...] = ()


@dataclass(frozen=True, slots=True)
class NoteAnalysis(Serialisable):
    sections: tuple[Section, ...]
    classification: Classification
    facts: Facts
