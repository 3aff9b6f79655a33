"""Medications: lexicon names (and unknown words before a dose) with dose, route, frequency."""

import re
from dataclasses import replace

from .drug_names import DRUG_NAMES, LEXICON_WORDS, MULTIWORD_PATTERNS, generic_of
from .results import Medication, MedicationChange, Span
from .sections import SectionIndex
from .text import scan, words

_TOKEN = re.compile(r"[a-z][a-z0-9]*(?:[-'][a-z0-9]+)*")
_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
_DOSE_UNIT = (
    r"mg|mcg|µg|micrograms?|milligrams?|grams?|g|mL|ml|cc|units?|IU|puffs?|tablets?|tabs?|"
    r"capsules?|caps?|drops?|sprays?|patch(?:es)?|mEq|meq|%|teaspoons?|tsp|tablespoons?"
)
_DOSE = re.compile(
    rf"(?<![\w.])(?P<n>{_NUMBER}(?:\s*(?:-|to)\s*{_NUMBER})?)\s*(?P<u>{_DOSE_UNIT})(?![\w])", re.I
)
_DOSE_THEN = re.compile(rf"\s*to\s*(?P<n>{_NUMBER})\s*(?P<u>{_DOSE_UNIT})(?![\w])", re.I)
# A dose after a word the lexicon does not know: "Zorvatinib 150 mg" (lower-cased scan, from
# the unit back to the word).
_SALT = re.compile(
    r"\s+(?:cypionate|enanthate|undecanoate|succinate|tartrate|hydrochloride|hcl|besylate|"
    r"maleate|mesylate|citrate|propionate|furoate|valerate|bromide|decanoate|palmitate)\b"
)
_BARE_DOSE_UNITS = tuple(
    # not "cholesterol 222 mg/dL": a concentration is a lab value
    re.compile(unit + r"\b(?!\s*/\s*(?:d?l|dL|mL))")
    for unit in ("mg", "mcg", "micrograms?", "milligrams?", "units", "iu")
)
_WORD_AND_NUMBER_BEFORE = re.compile(
    rf"(?<![A-Za-z-])(?P<name>[A-Za-z][A-Za-z-]{{3,}})\s+(?<![\d.]){_NUMBER}\s*$"
)
_LEADING_COUNT = re.compile(
    r"(?<![\w.])(?P<n>\d{1,2}|one|two|three)\s+(?:(?:extra|regular|maximum)[ -]strength\s+)?$",
    re.I,
)
_ROUTE_WORDS = re.compile(
    r"\b(?P<r>by mouth|orally|oral|per os|intravenous(?:ly)?|intramuscular(?:ly)?|"
    r"subcutaneous(?:ly)?|topical(?:ly)?|inhaled|inhalation|via inhaler|nebuli[sz]ed|"
    r"sublingual(?:ly)?|rectal(?:ly)?|per rectum|transdermal(?:ly)?|intranasal(?:ly)?|"
    r"ophthalmic|vaginal(?:ly)?)\b",
    re.I,
)
_ROUTE_ABBREVIATIONS = re.compile(
    r"(?<![\w.])(?P<r>PO|po|p\.o\.|IV|IM|SC|SQ|subq|sub-q|SL|PR|NG|inh)(?![\w])"
)
_FREQUENCY = re.compile(
    r"(?<![\w.])(?:"
    r"(?P<times>once|twice|one|two|three|four|[1-4])(?:\s+times?)?\s+(?:a|per|each|every)\s+day"
    r"|(?P<times_daily>once|twice|one|two|three|four|[1-4])(?:\s+times?)?\s+daily"
    r"|(?P<latin>q\.?d\.?|qday|b\.?i\.?d\.?|t\.?i\.?d\.?|q\.?i\.?d\.?|qhs|q\.h\.s\.|qam|qpm)"
    r"|q\s?(?P<qh>\d{1,2})(?:\s?-\s?(?P<qh2>\d{1,2}))?\s?h(?:rs?|ours?)?"
    r"|every\s+(?P<every>\d{1,2})(?:\s*(?:to|-)\s*(?P<every2>\d{1,2}))?\s*(?:hours?|hrs?|h)"
    r"|(?P<daily>daily|every day|a day|per day|each day|nightly|every night|at bedtime|"
    r"every morning|every evening|every other day|weekly|once (?:a|per) week|every week|"
    r"monthly|once (?:a|per) month)"
    r")(?![\w])",
    re.I,
)
_AS_NEEDED = re.compile(
    r"(?<![\w.])(?:as needed|prn|p\.r\.n\.|when needed|if needed)(?![\w])", re.I
)
_SENTENCE_END = re.compile(r"\n|;|(?<!\b[A-Za-z])\.(?=\s|$)|\?|!")
_NOT_TAKING = re.compile(
    r"\b(?:allergic|allerg(?:y|ies)|intoleran\w*|used to|no longer|stopped|previously)\b[^.;\n]*$",
    re.I,
)
# What the clinician does to a drug, said before its name in the same sentence.
_CHANGE_VERB = re.compile(
    r"\b(?P<up>increas\w*|rais\w*|titrat\w* up|uptitrat\w*|doubl\w*|bump\w*|go(?:ing)? up)"
    r"|\b(?P<down>decreas\w*|reduc\w*|lower\w*|cut\w* back|titrat\w* down|taper\w*|wean\w*)"
    r"|\b(?P<other>chang\w*|switch\w*|adjust\w*)"
    r"|\b(?P<stop>stop|stopp\w*|discontinu\w*|d/c|hold|holding|cease)"
    r"|\b(?P<start>start\w*|begin|began|initiat\w*|prescrib\w*|add(?:ed|ing)?|trial of)"
    r"(?![\w/])",
    re.I,
)
# fmt: off
_NOT_DRUG_WORDS = words("""
    from to of about approximately take takes taking took increase increased increasing decrease
    decreased start started starting continue continued continuing with additional extra another
    total than over under plus dose doses dosage dosing tablet tablets capsule each every daily
    was were been given receive received receiving prescribe prescribed initiate initiated
    reduce reduced change changed into only also then just around nearly least most more less
    maximum minimum until after before using uses used added adding weight weighs level levels
    intake sodium protein calories fiber caffeine sugar carbs carbohydrate fluid fluids water
    alcohol that this these those them they their there here have has had will would should
    could and the for per at by in on is are be being which while when where what
""")
_UNIT_NAMES = {
    "microgram": "mcg", "micrograms": "mcg", "µg": "mcg", "milligram": "mg", "milligrams": "mg",
    "gram": "g", "grams": "g", "ml": "mL", "cc": "mL", "unit": "units", "iu": "IU", "puff": "puffs",
    "tablet": "tablets", "tab": "tablets", "tabs": "tablets", "capsule": "capsules",
    "cap": "capsules", "caps": "capsules", "drop": "drops", "spray": "sprays", "patch": "patches",
    "meq": "mEq", "teaspoon": "tsp", "teaspoons": "tsp", "tablespoon": "tbsp",
    "tablespoons": "tbsp",
}
_ROUTES = {
    "by mouth": "oral", "orally": "oral", "oral": "oral", "per os": "oral", "po": "oral",
    "p.o.": "oral", "ng": "enteral", "intravenous": "intravenous", "intravenously": "intravenous",
    "iv": "intravenous", "intramuscular": "intramuscular", "intramuscularly": "intramuscular",
    "im": "intramuscular", "subcutaneous": "subcutaneous", "subcutaneously": "subcutaneous",
    "sc": "subcutaneous", "sq": "subcutaneous", "subq": "subcutaneous", "sub-q": "subcutaneous",
    "topical": "topical", "topically": "topical", "inhaled": "inhaled", "inhalation": "inhaled",
    "via inhaler": "inhaled", "inh": "inhaled", "nebulised": "inhaled", "nebulized": "inhaled",
    "sublingual": "sublingual", "sublingually": "sublingual", "sl": "sublingual",
    "rectal": "rectal", "rectally": "rectal", "per rectum": "rectal", "pr": "rectal",
    "transdermal": "transdermal", "transdermally": "transdermal", "intranasal": "intranasal",
    "intranasally": "intranasal", "ophthalmic": "ophthalmic", "vaginal": "vaginal",
    "vaginally": "vaginal",
}
_TIMES = {"1": 1, "one": 1, "once": 1, "2": 2, "two": 2, "twice": 2, "3": 3, "three": 3,
          "4": 4, "four": 4}
_TIMES_WORDS = {1: "daily", 2: "twice daily", 3: "three times daily", 4: "four times daily"}
_LATIN_FREQUENCY = {"qd": "daily", "qday": "daily", "bid": "twice daily",
                    "tid": "three times daily", "qid": "four times daily", "qhs": "at bedtime",
                    "qam": "every morning", "qpm": "every evening"}
_WORD_FREQUENCY = {
    "daily": "daily", "every day": "daily", "a day": "daily", "per day": "daily",
    "each day": "daily", "nightly": "at bedtime", "every night": "at bedtime",
    "at bedtime": "at bedtime", "every morning": "every morning", "every evening": "every evening",
    "every other day": "every other day", "weekly": "weekly", "once a week": "weekly",
    "once per week": "weekly", "every week": "weekly", "monthly": "monthly",
    "once a month": "monthly", "once per month": "monthly",
}
# fmt: on


def _is_token_edge(low: str, index: int) -> bool:
    return index <= 0 or index >= len(low) or not (low[index].isalnum() or low[index] in "-'")


def _longer_name(low: str, position: int, word: str) -> re.Match[str] | None:
    """The longest lexicon name of several words that starts with `word` at `position`."""
    for pattern in MULTIWORD_PATTERNS.get(word, ()):
        match = pattern.match(low, position)
        if match and _is_token_edge(low, match.end()):
            return match
    return None


def _drug_mentions(text: str, low: str) -> list[tuple[int, int, str]]:
    """(start, end, name as written) of every lexicon name, the longest name first.

    The words of the note are intersected with the lexicon first, so only the few drug words
    present are looked for (with str.find), rather than testing every word of the note.
    """
    found: dict[int, tuple[int, int, str]] = {}
    note_words = set(_TOKEN.findall(low))
    combined = {w for w in note_words if "-" in w and w.split("-")[0] in DRUG_NAMES}
    for word in (note_words & LEXICON_WORDS) | combined:
        position = low.find(word)
        while position != -1:
            end = position + len(word)
            if _is_token_edge(low, position - 1) and _is_token_edge(low, end):
                longer = _longer_name(low, position, word)
                if longer:
                    end = longer.end()
                if longer or word in DRUG_NAMES or word in combined:
                    salt = _SALT.match(low, end)  # "testosterone cypionate"
                    end = salt.end() if salt else end
                    found[position] = (position, end, text[position:end])
            position = low.find(word, position + 1)
    mentions = [found[position] for position in sorted(found)]
    # A name inside a longer one found earlier ("vitamin d" in "vitamin d3") is dropped.
    return [m for i, m in enumerate(mentions) if i == 0 or m[0] >= mentions[i - 1][1]]


def _unknown_drugs(text: str, low: str, known: list[tuple[int, int, str]]):
    """Mentions "<Word> <number> <unit>" where the word is neither in the lexicon nor common."""
    for unit in (match for pattern in _BARE_DOSE_UNITS for match in scan(pattern, low)):
        word = _WORD_AND_NUMBER_BEFORE.search(text, max(0, unit.start() - 50), unit.start())
        if word is None or word.group("name").lower() in _NOT_DRUG_WORDS:
            continue
        start, end = word.span("name")
        if not any(a < end and start < b for a, b, _ in known):
            yield start, end, word.group("name")


def _canonical_dose(number: str, unit: str) -> str:
    number = re.sub(r"\s*(?:-|to)\s*", "-", number.replace(",", ""))
    unit = _UNIT_NAMES.get(unit.lower(), unit if unit in ("mL", "IU", "mEq") else unit.lower())
    if number == "1" and unit in ("units", "tablets", "capsules", "puffs", "drops", "sprays"):
        unit = unit[:-1]
    return f"{number} {unit}" if unit != "%" else f"{number}%"


def _canonical_frequency(match: re.Match[str]) -> str:
    groups = match.groupdict()
    times = groups["times"] or groups["times_daily"]
    if times:
        return _TIMES_WORDS[_TIMES[times.lower()]]
    if groups["latin"]:
        return _LATIN_FREQUENCY[groups["latin"].lower().replace(".", "")]
    hours, hours_2 = groups["qh"] or groups["every"], groups["qh2"] or groups["every2"]
    if hours:
        if hours_2:
            return f"every {hours} to {hours_2} hours"
        return "every hour" if hours == "1" else f"every {hours} hours"
    return _WORD_FREQUENCY[re.sub(r"\s+", " ", groups["daily"].lower())]


def _medication(text: str, start: int, end: int, name: str, limit: int) -> Medication:
    """The mention at text[start:end] with the dose, route and frequency that follow it in the
    same sentence (and before `limit`, the next drug name)."""
    stop = _SENTENCE_END.search(text, end, limit)
    window_end = stop.start() if stop else limit
    span_start, span_end = start, end
    dose = route = frequency = None
    dose_match = _DOSE.search(text, end, window_end)
    leading = _LEADING_COUNT.search(text, max(0, start - 40), start)
    if dose_match:
        number, unit, dose_end = dose_match.group("n"), dose_match.group("u"), dose_match.end()
        then = _DOSE_THEN.match(text, dose_end, window_end)  # "from 10 mg to 20 mg"
        if then:
            number, unit, dose_end = then.group("n"), then.group("u"), then.end()
        dose = _canonical_dose(number, unit)
        span_end = max(span_end, dose_end)
    elif leading:  # "2 Extra Strength Tylenol"
        count = leading.group("n").lower()
        dose = f"{_TIMES.get(count, count)} tablets"
        span_start = leading.start()
    route_match = _ROUTE_WORDS.search(text, end, window_end) or _ROUTE_ABBREVIATIONS.search(
        text, end, window_end
    )
    if route_match:
        route = _ROUTES[route_match.group("r").lower()]
        span_end = max(span_end, route_match.end())
    frequency_match = _FREQUENCY.search(text, end, window_end)
    if frequency_match:
        frequency = _canonical_frequency(frequency_match)
        span_end = max(span_end, frequency_match.end())
    as_needed = _AS_NEEDED.search(text, end, window_end)
    if as_needed:
        frequency = f"{frequency} as needed" if frequency else "as needed"
        span_end = max(span_end, as_needed.end())
    span = Span(span_start, span_end)
    return Medication(name, dose, route, frequency, span, text[span_start:span_end])


def _dose_number(dose: str | None) -> tuple[float, str] | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?) (\S+)", dose or "")
    return (float(match.group(1)), match.group(2)) if match else None


def _direction(before: str | None, after: str | None) -> MedicationChange | None:
    """How `after` differs from `before` ("500 mg" -> "1000 mg" is increased)."""
    if not before or not after or before == after:
        return None
    a, b = _dose_number(before), _dose_number(after)
    if a and b and a[1] == b[1]:
        return "increased" if b[0] > a[0] else "decreased"
    return "changed"


def _verb_before(text: str, start: int) -> str | None:
    """The change verb of the mention's own clause ("increase the metformin"), if any."""
    clause_start = max(
        text.rfind(".", 0, start),
        text.rfind("\n", 0, start),
        text.rfind(",", 0, start),
        text.rfind(";", 0, start),
        start - 60,
    )
    verbs = list(_CHANGE_VERB.finditer(text, max(clause_start, 0), start))
    return next(name for name, value in verbs[-1].groupdict().items() if value) if verbs else None


def _with_change(
    first: Medication, later: Medication, verb: str | None, in_plan: bool
) -> Medication:
    """The drug after a later mention: a new dose said with a change verb, or in the plan, is
    the regimen now; "stop" in the plan stops it."""
    if verb == "stop" and in_plan:
        return replace(first, change="stopped")
    if later.dose and later.dose != first.dose and (verb or in_plan):
        direction = {"up": "increased", "down": "decreased"}.get(verb or "")
        return replace(
            first,
            dose=later.dose,
            frequency=later.frequency or first.frequency,
            route=later.route or first.route,
            change=direction or _direction(first.dose, later.dose),
            previous_dose=first.dose,
        )
    return first


def _first_change(text: str, medication: Medication, in_plan: bool) -> Medication:
    """What a drug's first mention says was done: "increase X from 10 mg to 20 mg", or a drug
    started in the plan."""
    moved = re.search(
        rf"from\s+(?P<n>{_NUMBER})\s*(?P<u>{_DOSE_UNIT})\s*to\s*{_NUMBER}", medication.text, re.I
    )
    if moved:
        before = _canonical_dose(moved.group("n"), moved.group("u"))
        return replace(medication, change=_direction(before, medication.dose), previous_dose=before)
    if in_plan and _verb_before(text, medication.span.start) == "start":
        return replace(medication, change="started")
    return medication


def find_medications(
    text: str, low: str, index: SectionIndex, excluded: list[tuple[int, int]]
) -> list[Medication]:
    mentions = _drug_mentions(text, low)
    mentions += _unknown_drugs(text, low, mentions)
    mentions.sort()
    medications: dict[str, Medication] = {}
    for number, (start, end, written) in enumerate(mentions):
        generic = generic_of(written)
        key = re.sub(r"[\s-]+", " ", (generic or written).lower())
        heading = index.heading_at(start)
        if "allerg" in heading or "family" in heading:
            continue
        if any(a <= start < b for a, b in excluded):
            continue
        limit = min(len(text), end + 100)
        if number + 1 < len(mentions):
            limit = min(limit, mentions[number + 1][0])
        section = index.section_at(start)
        in_plan = section is not None and "P" in section.soap
        if key in medications:  # a later mention: only what it changes is kept
            verb = _verb_before(text, start)
            if in_plan or verb:
                later = _medication(text, start, end, written, limit)
                medications[key] = _with_change(medications[key], later, verb, in_plan)
            continue
        sentence_start = max(text.rfind(".", 0, start), text.rfind("\n", 0, start), start - 120)
        if _NOT_TAKING.search(text, max(sentence_start, 0), start):
            continue
        medication = _medication(text, start, end, written, limit)
        if generic:
            medication = replace(medication, name=generic, brand=written)
        medications[key] = _first_change(text, medication, in_plan)
    return list(medications.values())
