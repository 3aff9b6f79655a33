"""medspaCy's ConText against the extractor's own status rules, on the same findings.

Not a dependency of the project: this runs only where medspacy is installed (skipped otherwise)
and prints the comparison the README's "Note extraction" section reports:

    python -m venv /tmp/medspacy && /tmp/medspacy/bin/pip install medspacy==1.3.1
    PYTHONPATH=. /tmp/medspacy/bin/python -m tests.notes.test_extraction_medspacy

Both read the findings the extractor found (its diagnoses, all statuses), so only the status
differs: ConText on spacy.blank("en") with PyRuSH sentences and its default rules (nothing
downloaded), the rules in features/notes/extraction/status.py on the other side.
"""

import json
import statistics
import time
from pathlib import Path

import pytest

from features.notes.extraction import analyse
from tests.notes.test_extraction_status import STATUS_CASES

medspacy = pytest.importorskip("medspacy")

HERE = Path(__file__).resolve().parent
NOTES_DIR = HERE.parents[2] / "shared" / "data" / "soap-notes"  # as tests/conftest.py finds it
LABELS_DIR = HERE / "labels"


def context_pipeline():
    import spacy  # only with medspacy

    nlp = spacy.blank("en")
    nlp.add_pipe("medspacy_pyrush")
    nlp.add_pipe("medspacy_context")
    return nlp


def context_status(nlp, text: str, spans: list[tuple[int, int]]) -> list[str]:
    from spacy.tokens import Span

    doc = nlp.make_doc(text)
    entities = []
    for start, end in spans:
        entity = doc.char_span(start, end, label="PROBLEM", alignment_mode="expand")
        if entity is not None and not any(
            e.start < entity.end and entity.start < e.end for e in entities
        ):
            entities.append(entity)
    doc.ents = [Span(doc, e.start, e.end, label="PROBLEM") for e in entities]
    for _, component in nlp.pipeline:
        doc = component(doc)
    by_start = {}
    for entity in doc.ents:
        if entity._.is_family:
            status = "family"
        elif entity._.is_negated:
            status = "negated"
        elif entity._.is_hypothetical or entity._.is_uncertain:
            status = "possible"
        elif entity._.is_historical:
            status = "historical"
        else:
            status = "current"
        by_start[entity.start_char] = status
    return [
        by_start.get(doc.char_span(s, e, alignment_mode="expand").start_char, "current")
        if doc.char_span(s, e, alignment_mode="expand")
        else "current"
        for s, e in spans
    ]


def compare() -> dict[str, object]:
    nlp = context_pipeline()
    phrases_rules = phrases_context = 0
    for text, finding, expected in STATUS_CASES:
        found = [d for d in analyse(text).facts.diagnoses if d.name == finding]
        if not found:
            continue
        phrases_rules += found[0].status == expected
        statuses = context_status(nlp, text, [(found[0].span.start, found[0].span.end)])
        phrases_context += statuses[0] == expected
    agree = total = context_drops_labelled = context_drops_labelled_not_historical = 0
    timings = []
    for label_path in sorted(LABELS_DIR.glob("*.json")):
        label = json.loads(label_path.read_text(encoding="utf-8"))
        text = (NOTES_DIR / label["note"]).read_text(encoding="utf-8")
        diagnoses = analyse(text).facts.diagnoses
        started = time.perf_counter()
        statuses = context_status(nlp, text, [(d.span.start, d.span.end) for d in diagnoses])
        timings.append((time.perf_counter() - started) * 1000)
        for diagnosis, status in zip(diagnoses, statuses, strict=True):
            total += 1
            agree += status == diagnosis.status
            labelled = any(w.lower() in diagnosis.name.lower() for w in label["diagnoses"])
            context_drops_labelled += labelled and status != "current"
            context_drops_labelled_not_historical += labelled and status not in (
                "current",
                "historical",
            )
    return {
        "phrases": len(STATUS_CASES),
        "phrases_right_rules": phrases_rules,
        "phrases_right_context": phrases_context,
        "findings": total,
        "agree": agree,
        "labelled_current_made_non_current_by_context": context_drops_labelled,
        "of_which_not_historical": context_drops_labelled_not_historical,
        "context_ms_per_note_median": round(statistics.median(timings), 2),
    }


def test_context_runs_without_a_model():
    nlp = context_pipeline()
    assert context_status(nlp, "He denies chest pain.", [(10, 20)]) == ["negated"]


if __name__ == "__main__":
    print(json.dumps(compare(), indent=2))
