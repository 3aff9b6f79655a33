"""Diagnoses: assessment items, past medical history lists and "history significant for"."""

import re
from dataclasses import replace

from .results import Diagnosis, Section, Span
from .sections import SectionIndex, normal_heading
from .status import status_of
from .text import dedup, lines, scan, trimmed, words

_ITEM_PREFIX = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|#\d*\.?|--?|[•*+▪◦])[ \t]*")
_SUB_LABEL = re.compile(r"(?P<label>[A-Za-z][\w /&'-]{0,40}?)\s*:\s*")
_PROBLEM_LABEL = re.compile(r"^(?:diagnos[ie]s|dx|problem|impression|axis (?:i|ii|iii))$", re.I)
_NOT_PROBLEM_LABEL = re.compile(r"^axis (?:iv|v)$", re.I)  # stressors and GAF score
_FIRST_SENTENCE = re.compile(
    r"(?<!\b[A-Za-z])(?<!\bMr)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bvs)(?<!\bMrs)\.(?=\s|$)|:\s|\s-\s"
)
_NOT_A_PROBLEM = re.compile(
    r"\b(?:i|we|he|she|they|you|it|his|her|their|our|is|are|was|were|be|been|has|have|had|"
    r"will|would|should|can|could|may|might|did|does|do|recommend\w*|discuss\w*|advis\w*|"
    r"continue\w*|patient|presents?|reviewed|ordered|today|agrees?|understands?)\b",
    re.I,
)
_ENCOUNTER = re.compile(
    r"^(?:(?:annual|routine|well|wellness|preventive|yearly)\b.*\b(?:visit|exam|examination|"
    r"physical|check)\w*|follow[- ]?up.*|stable|improved|improving|resolved|unchanged|none|"
    r"normal|negative|other|same|as above|see above|plan|n/?a|"
    r"(?:primary|secondary|principal|other|active|inactive|resolved|chronic|medical)\s+"
    r"(?:diagnos[ie]s|problems|issues|conditions))$",
    re.I,
)
# Sub-labels of a plan ("Medical Reasoning", "Patient Agreements"), by their last word.
_DETAIL_WORDS = re.compile(
    r"\b(?:reasoning|treatment|testing|counsel\w*|education|referrals?|agreements?|"
    r"instructions?|orders?|goals|recommendations?|follow[- ]?up|disposition|medications?|"
    r"labs?|imaging|diet|activity|code status|prognosis|monitoring|vaccines?|immunizations?|"
    r"comments?|notes?|results?|vitals?|exam|plan|assessment|reason|rationale|return|"
    r"precautions|summary)\W*$",
    re.I,
)
# Two problems in one phrase: "pain due to bursitis", "chest pain, rule out MI", "A versus B".
_CAUSAL_SPLIT = re.compile(
    r",?\s+(?:(?:most|more)\s+)?(?:likely\s+|probably\s+|possibly\s+)?"
    r"(?:due\s+to|secondary\s+to)\s+|,?\s+(?:rule\s+out|r/o|versus|vs\.?)\s+",
    re.I,
)
_LEADING_QUALIFIER = re.compile(  # used with match(text, pos): no "^"
    r"(?:(?:a|an|the|his|her|their|this|rare|associated|newly\s+diagnosed|"
    r"recently\s+diagnosed|known|h/o|history\s+of|remote\s+history\s+of|"
    # The words that make a finding possible stay outside its name; the status reads them.
    r"rule\s+out|r/o|possible|possibly|probable|questionable|suspected|"
    r"differential(?:\s+diagnosis)?(?:\s+(?:includes?|is))?:?)\s+)+",
    re.I,
)
_TRAILING_DATE = re.compile(
    r"(?:,?\s+(?:in|on|since|from)\s+(?:\d{1,2}/)?\d{4}\b.*|,?\s+\d{4}$|\s+\d{1,2}/\d{4}.*"
    r"|,?\s+(?:in\s+|on\s+)?\[\*\*.*"  # and de-identified dates: "in [**2173-7-14**]"
    r"|,?\s+(?:as\s+an?\s+(?:child|kid|teenager|infant)|in\s+(?:his\s+|her\s+)?childhood|"
    r"(?:\d+|many|several)\s+years\s+ago|years\s+ago|in\s+the\s+(?:remote\s+)?past|"
    r"resolved|now\s+resolved)\b.*)$",
    re.I,
)
# A test's reading ("EKG shows an anterior septal infarct pattern") is a result, not a problem.
_TEST_RESULT = re.compile(
    r"(?:ekg|ecg|electrocardiogram|x-?ray|cxr|ct|cat\s+scan|mri|ultrasound|echo\w*|imaging|"
    r"labs?|urinalysis|ua|biopsy|scan|study)\b.*\b(?:shows?|showed|shown|revealed?|"
    r"reveals|demonstrat\w*|notable\s+for|significant\s+for|consistent\s+with)\b",
    re.I,
)
_ITEM_SEPARATOR = re.compile(r"\s*[,;]\s*")
_FUNCTION_WORDS = frozenset({"in", "on", "at", "or", "for", "to", "as", "by", "from"})
_MEASUREMENT = re.compile(r"\d\s*%|\d\s*(?:mg|ml|cm|mm)\b", re.I)
# Lower-cased scans:
_HISTORY_PHRASES = tuple(
    re.compile(phrase + r"\s+")
    for phrase in (
        r"medical\s+history\s+(?:is\s+)?(?:significant|notable|remarkable|positive)\s+for",
        r"pmh\s+(?:significant\s+)?(?:for|of)",
        r"diagnosed\s+(?:him\s+|her\s+|them\s+)?with",
        r"diagnosis\s+of",
    )
)
_HISTORY_OF = re.compile(r"history\s+of\s+")
# "denies any previous history of X": a narrative's history of X, kept as negated.
_DENIED_HISTORY = re.compile(
    r"\b(?:deni\w*|deny|no|not\s+have|never\s+had)\s+(?:(?:a|any|personal|prior|previous|"
    r"significant|known)\s+)*$"
)
_DIAGNOSIS_INLINE = tuple(
    re.compile(label + r"\s*:\s*")
    for label in (r"diagnos[ie]s", "dx", "pmh", "past medical history", "problem list")
)
_CLAUSE_END = re.compile(
    r"(?<!\b[A-Za-z])\.(?=\s|$)|[;\n(]|,?\s+(?:who|which|that|but|presents|presenting|"
    r"since|for\s+(?:the\s+)?(?:past|last)|at\s+(?:age|the)|in\s+(?:\d|early|late)|"
    r"and\s+(?:is|was|has|had|presents)|was\s+unable)\b",
    re.I,
)
_LIST_SPLIT = re.compile(
    r"\s*,\s*(?:(?:and|or|as\s+well\s+as)\s+)?|\s+(?:and|or|as\s+well\s+as)\s+", re.I
)
_HISTORY_SUBHEADING = re.compile(
    r"^(?P<kind>medical|surgical|procedures?|social|family|psychiatric|obstetric|other|"
    r"past\s+medical|past\s+surgical)(?:\s+history)?\s*:?$",
    re.I,
)
_NOT_MEDICAL_SUBLIST = re.compile(r"surg|procedure|social|family|obstetric", re.I)
_MEDICAL_HISTORY = re.compile(
    r"^(?:past\s+)?(?:medical\s+)?history$|medical history|^pmh$|past history|problem list|"
    r"active problems|comorbidities"
)
# fmt: off
_KEY_DROP = words("""
    history of prior the a an with and known newly diagnosed status post s p mellitus
    suspected possible probable likely rare associated his her
""")
_KEY_SYNONYMS = {
    "htn": ("hypertension",), "dm": ("diabetes",), "t2dm": ("diabetes", "type", "2"),
    "dm2": ("diabetes", "type", "2"), "chf": ("congestive", "heart", "failure"),
    "cad": ("coronary", "artery", "disease"), "afib": ("atrial", "fibrillation"),
    "copd": ("chronic", "obstructive", "pulmonary", "disease"), "ii": ("2",),
    "ckd": ("chronic", "kidney", "disease"), "oa": ("osteoarthritis",),
}
# fmt: on


def diagnosis_key(name: str) -> tuple[str, ...]:
    """Order-free token key: "Type 2 diabetes mellitus" and "diabetes type II" share one."""
    tokens: set[str] = set()
    for token in re.findall(r"[a-z0-9]+", name.lower()):
        for word in _KEY_SYNONYMS.get(token, (token,)):
            if word in _KEY_DROP:
                continue
            if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
                word = word[:-1]
            tokens.add(word)
    return tuple(sorted(tokens))


def _looks_like_problem(candidate: str) -> bool:
    words = candidate.split()
    return (
        0 < len(words) <= 14
        and not (len(words) == 1 and candidate.lower() in _KEY_DROP | _FUNCTION_WORDS)
        and any(ch.isalpha() for ch in candidate)
        and not _NOT_A_PROBLEM.search(candidate)
        and not _ENCOUNTER.match(candidate.strip(" .,"))
        and not _DETAIL_WORDS.search(candidate)
        and not _MEASUREMENT.search(candidate)
        and not _TEST_RESULT.match(candidate)
    )


def _problem(text: str, start: int, end: int) -> list[Diagnosis]:
    """The diagnoses in text[start:end]: one, or two around "due to"/"secondary to"."""
    if not text[start:end].strip():
        return []
    problems = []
    pieces, position = [], start
    for cause in _CAUSAL_SPLIT.finditer(text, start, end):
        pieces.append((position, cause.start()))
        position = cause.end()
    pieces.append((position, end))
    for piece_start, piece_end in pieces:
        qualifier = _LEADING_QUALIFIER.match(text, piece_start, piece_end)
        if qualifier:
            piece_start = qualifier.end()
        date = _TRAILING_DATE.search(text, piece_start, piece_end)
        if date:
            piece_end = date.start()
        a, b = trimmed(text, piece_start, piece_end)
        while b > a and text[b - 1] in ".,;:":
            b -= 1
        name = text[a:b]
        if name and _looks_like_problem(name):
            problems.append(Diagnosis(name, Span(a, b), name))
    return problems


def _assessment_problems(text: str, section: Section) -> list[Diagnosis]:
    """Numbered or bulleted items, "Problem: plan" lines and short problem paragraphs."""
    problems = []
    for line_start, line_end in lines(text, section.start, section.end):
        line = text[line_start:line_end]
        if not line.strip():
            continue
        prefix = _ITEM_PREFIX.match(line)
        offset = prefix.end() if prefix else len(line) - len(line.lstrip())
        label = _SUB_LABEL.match(line, offset)
        if label:
            name = label.group("label").strip()
            if _NOT_PROBLEM_LABEL.match(name):
                continue
            if _PROBLEM_LABEL.match(name):
                offset = label.end()
            elif _looks_like_problem(name):  # "Hypertension: continue lisinopril."
                problems += _problem(text, line_start + offset, line_start + label.end("label"))
                continue
            else:
                continue  # "Medical Reasoning: ...", "Patient Agreements: ..."
        end_match = _FIRST_SENTENCE.search(line, offset)
        end = end_match.start() if end_match else len(line.rstrip())
        # A paragraph counts by its first sentence when that is short: "Left knee pain. ..."
        paragraph = not prefix and not label and line[end:].strip(" .\t")
        if paragraph and len(line[offset:end].split()) > 8:
            continue
        problems += _problem(text, line_start + offset, line_start + end)
    return problems


def _phrase_list(text: str, cue_end: int, limit: int) -> list[Diagnosis]:
    """The list after "history significant for", "diagnosed with": "A, B, and C, who ..."."""
    stop = _CLAUSE_END.search(text, cue_end, limit)
    end = stop.start() if stop else limit
    problems, position = [], cue_end
    for separator in _LIST_SPLIT.finditer(text, cue_end, end):
        problems += _problem(text, position, separator.start())
        position = separator.end()
    problems += _problem(text, position, end)
    return [p for p in problems if len(p.name.split()) <= 8]


def _history_items(text: str, section: Section) -> list[Diagnosis]:
    """Items and short lines of a past medical history, skipping surgical or family sub-lists.

    "1. Liver cirrhosis caused by alcohol. This is per the patient." gives its first sentence;
    "HTN, DM2, CAD" gives three.
    """
    problems, taking = [], True
    for line_start, line_end in lines(text, section.start, section.end):
        start, end = trimmed(text, line_start, line_end)
        line = text[start:end]
        if not line:
            continue
        if _HISTORY_SUBHEADING.match(line) or (line.endswith(":") and len(line.split()) <= 5):
            taking = not _NOT_MEDICAL_SUBLIST.search(line)
            continue
        prefix = _ITEM_PREFIX.match(line)
        if not taking or (not prefix and _NOT_A_PROBLEM.search(line)):
            continue
        position = start + (prefix.end() if prefix else 0)
        if prefix:
            stop = _FIRST_SENTENCE.search(text, position, end)
            end = stop.start() if stop else end
        for separator in _ITEM_SEPARATOR.finditer(text, position, end):
            problems += _problem(text, position, separator.start())
            position = separator.end()
        problems += _problem(text, position, end)
    return problems


def find_diagnoses(text: str, low: str, sections: tuple[Section, ...]) -> list[Diagnosis]:
    problems: list[Diagnosis] = []
    index = SectionIndex(sections)
    for section in sections:
        heading = normal_heading(section.heading) if section.heading else ""
        if "A" in section.soap:
            problems += _assessment_problems(text, section)
        elif _MEDICAL_HISTORY.search(heading) or "family" in heading:
            problems += _history_items(text, section)  # a family's are kept with that status
    # Phrases, each pattern scanned once over the whole note and placed in its section.
    cues = [(m, False) for p in _HISTORY_PHRASES for m in scan(p, low)]
    cues += [(m, False) for m in scan(_HISTORY_OF, low)]
    cues += [(m, True) for p in _DIAGNOSIS_INLINE for m in scan(p, low)]
    for cue, labelled in cues:
        section = index.section_at(cue.start())
        heading = normal_heading(section.heading) if section and section.heading else ""
        if section is None or cue.start() >= section.end:
            continue  # outside a body (a heading line)
        if labelled:  # "Diagnosis: X" in the text of a non-assessment section
            if "A" not in section.soap:
                problems += _phrase_list(text, cue.end(), section.end)
            continue
        # In a narrative, "history of" is as often a symptom's history: only in a history list.
        if cue.re is _HISTORY_OF and not _MEDICAL_HISTORY.search(heading):
            if "family" in heading or _DENIED_HISTORY.search(
                low, max(0, cue.start() - 40), cue.start()
            ):
                problems += _phrase_list(text, cue.end(), section.end)
            continue
        problems += _phrase_list(text, cue.end(), section.end)
    return _with_status(text, index, problems)


def _with_status(text: str, index: SectionIndex, problems: list[Diagnosis]) -> list[Diagnosis]:
    """Each problem with its status, once per name: a current mention wins over the others
    ("denies pneumonia" early on, "Pneumonia." in the assessment)."""
    judged = [
        replace(p, status=status_of(text, p.span.start, p.span.end, index.section_at(p.span.start)))
        for p in sorted(problems, key=lambda d: d.span.start)
    ]
    kept = dedup([p for p in judged if p.status == "current"], lambda d: diagnosis_key(d.name))
    current = {diagnosis_key(p.name) for p in kept}
    kept += dedup(
        [p for p in judged if p.status != "current" and diagnosis_key(p.name) not in current],
        lambda d: diagnosis_key(d.name),
    )
    return sorted(kept, key=lambda d: d.span.start)
