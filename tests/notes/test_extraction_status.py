"""Diagnosis status: denied, possible, family and resolved findings are never current.

STATUS_CASES is also what tests/notes/test_extraction_medspacy.py scores medspaCy's ConText on.
"""

import pytest

from features.notes.extraction import analyse

# (note text, the finding as the extractor names it, the expected status)
STATUS_CASES: tuple[tuple[str, str, str], ...] = (
    ("PAST MEDICAL HISTORY\nHypertension, diabetes.\n", "Hypertension", "current"),
    (
        "HPI\nShe has a past medical history significant for asthma and hypertension.\n",
        "hypertension",
        "current",
    ),
    (
        "HPI\nHe denies any previous history of lung infections or pneumonia.\n",
        "pneumonia",
        "negated",
    ),
    (
        "HPI\nHe denies any previous history of lung infections or pneumonia.\n",
        "lung infections",
        "negated",
    ),
    ("PAST MEDICAL HISTORY\nNo history of stroke.\n", "stroke", "negated"),
    ("MEDICAL HISTORY\nShe does not have a history of diabetes.\n", "diabetes", "negated"),
    ("ASSESSMENT\n1. Chest pain, rule out myocardial infarction.\n", "myocardial infarction",
     "possible"),
    ("ASSESSMENT\n1. Rule out pulmonary embolism.\n", "pulmonary embolism", "possible"),
    ("ASSESSMENT\n1. Possible gout.\n", "gout", "possible"),
    ("ASSESSMENT\n1. Questionable early cellulitis.\n", "early cellulitis", "possible"),
    ("ASSESSMENT\n1. Differential includes viral pharyngitis.\n", "viral pharyngitis",
     "possible"),
    ("HPI\nHer mother was diagnosed with breast cancer.\n", "breast cancer", "family"),
    ("HPI\nShe also has a brother who is diagnosed with autism.\n", "autism", "family"),
    ("FAMILY HISTORY\nFather has a history of colon cancer.\n", "colon cancer", "family"),
    ("FAMILY HISTORY\nDiabetes, hypertension.\n", "Diabetes", "family"),
    ("PAST MEDICAL HISTORY\nAsthma as a child, resolved.\n", "Asthma", "historical"),
    ("PAST MEDICAL HISTORY\n1. Hepatitis A years ago.\n", "Hepatitis A", "historical"),
    ("PAST MEDICAL HISTORY\n1. Remote history of peptic ulcer disease.\n", "peptic ulcer disease",
     "historical"),
    ("ASSESSMENT\n1. Type 2 diabetes without complications.\n",
     "Type 2 diabetes without complications", "current"),
    ("HPI\nHer mother notes that she was diagnosed with asthma.\n", "asthma", "current"),
)  # fmt: skip


def statuses(text: str) -> dict[str, str]:
    return {d.name: d.status for d in analyse(text).facts.diagnoses}


@pytest.mark.parametrize(("text", "finding", "status"), STATUS_CASES)
def test_diagnosis_status(text, finding, status):
    assert statuses(text).get(finding) == status, statuses(text)


def test_a_denied_finding_stays_in_the_facts_but_a_current_mention_wins():
    text = (
        "HPI\nHe denies any history of pneumonia.\n\nASSESSMENT\n1. Pneumonia.\n"
        "2. Gout.\n\nFAMILY HISTORY\nMother with gout.\n"
    )
    diagnoses = analyse(text).facts.diagnoses
    current = [d.name for d in diagnoses if d.status == "current"]
    assert current == ["Pneumonia", "Gout"]
    assert [d.status for d in diagnoses if "gout" in d.name.lower()] == ["current", "family"]
    denied = analyse("HPI\nHe denies any history of pneumonia.\n").facts.diagnoses
    assert [(d.name, d.status) for d in denied] == [("pneumonia", "negated")]
    assert denied[0].to_dict()["status"] == "negated"
