"""The LLM's facts held against the notes, without the service: quotes, names, negation."""

import pytest

from features.summaries import grounding
from features.summaries.schemas import LLMSummary

NOTE = (
    "HPI: Seen for cough. She denies any previous history of lung infections or pneumonia.\n"
    "Her mother had breast cancer.\n"
    "ASSESSMENT AND PLAN\n"
    "1. Acute   bronchitis.\n"
    "2. Hypertension. Increase Lasix to 40 mg daily.\n"
    "Allergic to penicillin (hives).\n"
)


def answer(**items) -> LLMSummary:
    return LLMSummary.model_validate(
        {
            "summary": "A summary.",
            "diagnoses": items.get("diagnoses", []),
            "medications": items.get("medications", []),
            "allergies": items.get("allergies", []),
            "no_known_allergies": items.get("no_known_allergies", False),
        }
    )


def diagnosis(name: str, quote: str, note_id: str = "n1") -> dict:
    return {"name": name, "citations": [{"note_id": note_id, "quote": quote}]}


@pytest.mark.parametrize(
    ("quote", "span_text"),
    [
        ("acute bronchitis", "Acute   bronchitis"),
        ("ACUTE BRONCHITIS.", "Acute   bronchitis"),
        ("\u201cAcute bronchitis\u201d", "Acute   bronchitis"),
        ("Hypertension. Increase Lasix", "Hypertension. Increase Lasix"),
    ],
)
def test_quotes_are_found_folded_and_their_spans_are_the_notes_own_text(quote, span_text):
    note = grounding.NoteEvidence("n1", NOTE)
    start, end = note.find(quote)
    assert NOTE[start:end] == span_text


def test_a_quote_not_in_the_note_is_not_found():
    assert grounding.NoteEvidence("n1", NOTE).find("chronic bronchitis") is None
    assert grounding.NoteEvidence("n1", NOTE).find("  ") is None


@pytest.mark.parametrize(
    ("name", "quote", "reason"),
    [
        ("Acute bronchitis", "Acute bronchitis", None),
        ("Pneumonia", "denies any previous history of lung infections or pneumonia",
         "negated_in_note"),
        ("Asthma", "Acute bronchitis", "not_in_quote"),
        ("Asthma", "Asthma, well controlled", "quote_not_in_note"),
        ("Hypertension", "2. Hypertension.", None),
    ],
)  # fmt: skip
def test_each_diagnosis_must_be_named_by_its_quote_and_not_denied(name, quote, reason):
    checked = grounding.check_answer(
        answer(diagnoses=[diagnosis(name, quote)]), [grounding.NoteEvidence("n1", NOTE)]
    )
    if reason is None:
        assert [d["name"] for d in checked.diagnoses] == [name]
        [citation] = checked.diagnoses[0]["citations"]
        assert NOTE[citation["start"] : citation["end"]] == citation["text"]
    else:
        assert checked.diagnoses == []
        assert [(u.name, u.reason) for u in checked.unsupported] == [(name, reason)]


def test_the_extractions_status_makes_a_finding_not_current():
    start = NOTE.index("breast cancer")
    span = {"start": start, "end": start + len("breast cancer")}
    facts = {"diagnoses": [{"name": "breast cancer", "status": "family", "span": span}]}
    note = grounding.NoteEvidence("n1", NOTE, facts)
    checked = grounding.check_answer(
        answer(diagnoses=[diagnosis("Breast cancer", "mother had breast cancer")]), [note]
    )
    assert [u.reason for u in checked.unsupported] == ["negated_in_note"]


def test_a_drug_named_by_its_brand_in_the_note_is_supported():
    start = NOTE.index("Lasix")
    span = {"start": start, "end": start + len("Lasix to 40 mg daily")}
    facts = {"medications": [{"name": "furosemide", "brand": "Lasix", "span": span}]}
    note = grounding.NoteEvidence("n1", NOTE, facts)
    medication = {
        "name": "furosemide",
        "dose": "40 mg",
        "route": None,
        "frequency": "daily",
        "citations": [{"note_id": "n1", "quote": "Increase Lasix to 40 mg daily"}],
    }
    checked = grounding.check_answer(answer(medications=[medication]), [note])
    assert [m["name"] for m in checked.medications] == ["furosemide"]


def test_merge_keeps_what_the_notes_record_and_flags_the_disagreements():
    from_notes = {
        "diagnoses": [{"name": "Acute bronchitis", "note_ids": ["n1"], "citations": []}],
        "medications": [
            {
                "name": "furosemide",
                "dose": "40 mg",
                "route": None,
                "frequency": "daily",
                "note_ids": ["n1"],
                "citations": [],
            }
        ],
        "allergies": [
            {"substance": "penicillin", "reaction": "hives", "note_ids": ["n1"], "citations": []}
        ],
        "no_known_allergies": False,
        "latest_vital_signs": [],
    }
    reply = answer(
        medications=[
            {
                "name": "furosemide",
                "dose": "20 mg",
                "route": None,
                "frequency": "daily",
                "citations": [{"note_id": "n1", "quote": "Lasix"}],
            }
        ],
        no_known_allergies=True,
    )
    checked = grounding.Checked(
        medications=[
            {**reply.medications[0].model_dump(exclude={"citations"}), "note_ids": ["n1"],
             "citations": []}
        ]
    )  # fmt: skip
    merged = grounding.merge(checked, reply, from_notes)
    info = merged.key_information
    assert [d["name"] for d in info["diagnoses"]] == ["Acute bronchitis"]
    assert info["medications"][0]["dose"] == "40 mg"
    assert info["medications"][0]["found_by"] == ["llm", "notes"]
    assert info["allergies"][0]["substance"] == "penicillin"
    assert {(d["name"], d["issue"]) for d in merged.disagreements} == {
        ("furosemide", "differs_from_notes"),
        ("penicillin", "omitted_by_llm"),
        ("penicillin", "contradicted_by_llm"),
    }
    assert merged.summary.startswith("Allergies recorded in the notes: penicillin (hives).")


def test_unsupported_names_in_the_text_are_found():
    facts = [grounding.Unsupported("medication", "Warfarin", "n1", "x", "not_in_quote")]
    assert grounding.named_in_text("Continue WARFARIN 5 mg.", facts) == facts
    assert grounding.named_in_text("Continue aspirin.", facts) == []
