"""Rule-based analysis of clinical note text: sections, note type and facts.

Pure functions of the text, every pattern compiled at import. Offsets are character offsets
into the text exactly as given (CRLF included), so `text[span.start:span.end]` is always the
item's `text`. One module per concern; this one puts them together.
"""

from .allergies import find_allergies
from .classification import classify
from .diagnoses import diagnosis_key, find_diagnoses
from .medications import find_medications
from .plan import find_plan
from .results import (
    Allergy,
    Classification,
    Diagnosis,
    Facts,
    Medication,
    NoteAnalysis,
    PlanItem,
    Section,
    Span,
    VitalSign,
)
from .sections import SectionIndex, soap_of, split_sections
from .text import lowered
from .vitals import find_vitals

__all__ = [
    "Allergy",
    "Classification",
    "Diagnosis",
    "Facts",
    "Medication",
    "NoteAnalysis",
    "PlanItem",
    "Section",
    "Span",
    "VitalSign",
    "analyse",
    "classify",
    "diagnosis_key",
    "extract_facts",
    "soap_of",
    "split_sections",
]


def extract_facts(text: str, sections: tuple[Section, ...]) -> Facts:
    low = lowered(text)
    allergies, no_known = find_allergies(text, low, sections)
    excluded = [(a.span.start, a.span.end) for a in allergies]
    return Facts(
        vitals=tuple(find_vitals(text, low)),
        medications=tuple(find_medications(text, low, SectionIndex(sections), excluded)),
        diagnoses=tuple(find_diagnoses(text, low, sections)),
        allergies=tuple(allergies),
        no_known_allergies=no_known,
        plan=tuple(find_plan(text, sections)),
    )


def analyse(text: str) -> NoteAnalysis:
    sections = split_sections(text)
    return NoteAnalysis(sections, classify(text, sections), extract_facts(text, sections))
