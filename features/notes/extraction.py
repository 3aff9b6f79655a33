"""Rule-based analysis of clinical note text: sections, note type and a few facts.

Pure functions of the text, stdlib `re` only, every pattern compiled at import. Offsets are
character offsets into the text exactly as given (CRLF included), so `text[span.start:span.end]`
is always the item's `text`.

Speed: most whole-text patterns run on an ASCII-lowercased copy of the text (same length, so
offsets carry over) without `re.IGNORECASE` and without a leading `\\b`. Both would stop `re`
from skipping ahead by the pattern's first characters and make every scan several times slower.
The word boundary is checked in `_scan` instead.
"""

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from string import ascii_lowercase, ascii_uppercase
from typing import Any, Literal

SOAP = Literal["S", "O", "A", "P"]
NoteType = Literal["admission", "progress", "consult", "procedure", "discharge", "other"]
VitalKind = Literal[
    "blood_pressure", "heart_rate", "temperature", "respiratory_rate", "spo2", "weight", "height"
]


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class _Serialisable:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, str, int, float, bool and None: ready for `json.dumps`."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Span(_Serialisable):
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Section(_Serialisable):
    """A heading (as written, without colon or markdown marks) and its body.

    `start`/`end` delimit the body with surrounding blank space trimmed; `text` is that body.
    """

    heading: str | None
    soap: tuple[SOAP, ...]
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Classification(_Serialisable):
    note_type: NoteType
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VitalSign(_Serialisable):
    kind: VitalKind
    value: float
    value_2: float | None
    unit: str
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class Medication(_Serialisable):
    name: str
    dose: str | None
    route: str | None
    frequency: str | None
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class Diagnosis(_Serialisable):
    name: str
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class Allergy(_Serialisable):
    substance: str
    reaction: str | None
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class Facts(_Serialisable):
    vitals: tuple[VitalSign, ...]
    medications: tuple[Medication, ...]
    diagnoses: tuple[Diagnosis, ...]
    allergies: tuple[Allergy, ...]
    no_known_allergies: bool


@dataclass(frozen=True, slots=True)
class NoteAnalysis(_Serialisable):
    sections: tuple[Section, ...]
    classification: Classification
    facts: Facts


# --- scanning helpers ----------------------------------------------------------------------

_ASCII_LOWER = str.maketrans(ascii_uppercase, ascii_lowercase)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _lowered(text: str) -> str:
    """Lower-case text with the same length, so offsets into it are offsets into `text`."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _word_start(low: str, index: int) -> bool:
    return index == 0 or not (low[index - 1].isalnum() or low[index - 1] == "_")


def _number_start(low: str, index: int) -> bool:
    return index == 0 or low[index - 1] not in "0123456789./"


def _scan(
    pattern: re.Pattern[str],
    low: str,
    start: int = 0,
    end: int | None = None,
    accept: Callable[[str, int], bool] = _word_start,
) -> Iterator[re.Match[str]]:
    """Matches of `pattern` in low[start:end] whose start passes `accept` (a leading \\b)."""
    end = len(low) if end is None else end
    position = start
    while position <= end:
        match = pattern.search(low, position, end)
        if match is None:
            return
        if accept(low, match.start()):
            yield match
            position = max(match.end(), match.start() + 1)
        else:
            position = match.start() + 1


def _any_match(patterns: tuple[re.Pattern[str], ...], low: str, start: int, end: int) -> bool:
    return any(next(_scan(pattern, low, start, end), None) for pattern in patterns)


def _lines(text: str, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of every line of text[start:end], without the break; CR, LF, CRLF."""
    end = len(text) if end is None else end
    position = start
    for brk in _LINE_BREAK.finditer(text, start, end):
        yield position, brk.start()
        position = brk.end()
    if position < end:
        yield position, end


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _dedup(items: list, key: Callable) -> list:
    """The first item of each key, in order; items with an empty key are dropped."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k and k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


# --- sections ------------------------------------------------------------------------------

# fmt: off
_KNOWN_HEADINGS = (
    "subjective", "objective", "assessment", "assessments", "plan", "plans",
    "assessment and plan", "assessment & plan", "assessment/plan", "a/p", "a&p",
    "impression", "impressions", "impression and plan", "impression/plan",
    "assessment and recommendations", "impression and recommendations",
    "diagnosis", "diagnoses", "dx", "problem list", "active problems", "problems",
    "chief complaint", "cc", "reason for visit", "reason for consultation", "reason for consult",
    "reason for referral", "reason for admission", "history of present illness", "hpi",
    "history", "interval history", "review of systems", "ros",
    "past medical history", "pmh", "medical history", "past surgical history", "psh",
    "surgical history", "past history", "family history", "fh", "social history", "sh",
    "birth history", "medications", "current medications", "meds", "home medications",
    "outpatient medications", "medications on admission", "admission medications",
    "discharge medications", "allergies", "allergy", "drug allergies",
    "physical exam", "physical examination", "exam", "examination", "pe",
    "vitals", "vital signs", "vitals reviewed", "results", "labs", "laboratory",
    "lab results", "laboratory data", "laboratory results", "imaging", "radiology", "studies",
    "data", "diagnostics", "diagnostic studies", "findings", "instructions",
    "patient instructions", "discharge instructions", "recommendations", "follow-up",
    "follow up", "followup", "disposition", "hospital course", "procedure",
    "procedure performed", "indications", "indication", "operative findings",
    "preoperative diagnosis", "pre-operative diagnosis", "postoperative diagnosis",
    "post-operative diagnosis", "anesthesia", "estimated blood loss", "complications",
    "specimens", "discharge diagnosis", "discharge diagnoses", "admission diagnosis",
    "admitting diagnosis", "principal diagnosis", "condition at discharge",
    "discharge condition", "medical decision making", "mdm", "discharge summary",
    "history and physical", "progress note", "consultation", "consult note",
    "operative note", "procedure note", "immunizations", "brief hospital course",
)
# fmt: on
_KNOWN_SET = frozenset(_KNOWN_HEADINGS)
_HEADING_CAPS = re.compile(r"^[ \t]*(?P<h>[A-Z][A-Z0-9 &/,'()\-]{0,58}[A-Z)])[ \t]*:?[ \t]*$")
_HEADING_MARKDOWN = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(?P<h>.*?)[ \t]*#*[ \t]*$")
_HEADING_BOLD = re.compile(
    r"^[ \t]*\*\*(?P<h>[^*\n]{1,60}?)[ \t]*:?[ \t]*\*\*[ \t]*:?[ \t]*(?P<rest>.*)$"
)
_NOT_MARKDOWN_HEADING = re.compile(r"\.\s|:\s*$|(?:\S+\s+){8}")

# The first rule that matches the lower-cased heading gives its letters.
# fmt: off
_SOAP_RULES: tuple[tuple[re.Pattern[str], tuple[SOAP, ...]], ...] = (
    (re.compile(r"^(?:history and physical|h&p|discharge summary|progress note|consult(?:ation)?"
                r"(?: note)?|operative note|procedure note)$"), ()),
    (re.compile(r"^(?:a ?[/&] ?p|(?:assessment|impression)s? ?(?:and|&|/) ?"
                r"(?:plan|recommendations?))$"), ("A", "P")),
    (re.compile(r"^s$|^subjective"), ("S",)),
    (re.compile(r"^o$|^objective"), ("O",)),
    (re.compile(r"^a$"), ("A",)),
    (re.compile(r"^p$"), ("P",)),
    (re.compile(r"\bdischarge (?:medications?|instructions?|plan)\b"), ("P",)),
    (re.compile(r"\b(?:diagnos[ie]s|dx|impressions?|assessments?|problem list|problems|"
                r"medical decision making|mdm)\b"), ("A",)),
    (re.compile(r"\b(?:plans?|instructions?|recommendations?|follow-?up|follow up|disposition|"
                r"patient education|orders)\b"), ("P",)),
    (re.compile(r"\b(?:exam|examination|physical|pe|vitals?|vital signs|results?|labs?|"
                r"laboratory|imaging|radiology|studies|diagnostics|data|findings)\b"), ("O",)),
    (re.compile(r"\b(?:chief complaint|cc|hpi|history|ros|review of systems|medications?|meds|"
                r"allerg(?:y|ies)|complaints?|reason for \w+|pmh|psh|fh|sh|immunizations)\b"),
     ("S",)),
)
# fmt: on


def _normal_heading(heading: str) -> str:
    return re.sub(r"\s+", " ", heading.strip().lower())


def soap_of(heading: str | None) -> tuple[SOAP, ...]:
    """The S/O/A/P letters a heading belongs to; () when the heading is not recognised."""
    if heading is None:
        return ()
    name = _normal_heading(heading)
    for pattern, letters in _SOAP_RULES:
        if pattern.search(name):
            return letters
    return ()


def _known_heading(label: str) -> bool:
    return " ".join(label.lower().split()) in _KNOWN_SET


def _heading_in_line(line: str) -> tuple[str, int] | None:
    """(heading as written, offset of the body in the line) when the line opens a section.

    Headings: markdown (`## Plan`), bold (`**Plan:**`), a known heading word followed by a colon
    and maybe text (`HPI: ...`, `S: ...`), a line holding only a known heading (`Plan`), or an
    ALL-CAPS line (`VITALS REVIEWED`). A sentence with a colon (`Patient denies: pain`) is not.
    Known headings are looked up in a set: far quicker than a regex of 150 alternatives.
    """
    stripped = line.strip()
    if not stripped:
        return None
    if stripped[0] in "#*":
        for pattern in (_HEADING_MARKDOWN, _HEADING_BOLD):
            match = pattern.match(line)
            if not match or (
                pattern is _HEADING_MARKDOWN and _NOT_MARKDOWN_HEADING.search(match.group("h"))
            ):
                continue  # "# CHF: diuresed. ..." is a problem line, not a heading
            heading = match.group("h").rstrip(": \t")
            rest = match.groupdict().get("rest") or ""
            colon = heading.find(":")
            if colon > 0 and _known_heading(heading[:colon]):
                body = match.start("h") + colon + 1
                return heading[:colon].strip(), body + len(line[body:]) - len(line[body:].lstrip())
            if heading and (not rest or _known_heading(heading)):
                return heading, match.start("rest") if rest else len(line)
    colon = line.find(":", 0, 60)
    if colon > 0:
        label = line[:colon].strip()
        if label in ("S", "O", "A", "P") or _known_heading(label):
            body = colon + 1
            return label, body + len(line[body:]) - len(line[body:].lstrip())
    if len(stripped) > 60:
        return None
    label = stripped.rstrip(":").rstrip()
    if _known_heading(label):
        return label, len(line)
    match = _HEADING_CAPS.match(line) if stripped.upper() == stripped else None
    if match:
        heading = match.group("h")
        letters = sum(ch.isalpha() for ch in heading)
        if len(heading.split()) <= 7 and (letters >= 5 or _known_heading(heading)):
            return heading, len(line)
    return None


def split_sections(text: str) -> tuple[Section, ...]:
    """Sections in order; text before the first heading is a section with heading None."""
    found: list[tuple[str, int, int]] = []  # heading, line start, body start
    for line_start, line_end in _lines(text):
        hit = _heading_in_line(text[line_start:line_end])
        if hit:
            found.append((hit[0], line_start, line_start + hit[1]))
    sections: list[Section] = []
    start, end = _trimmed(text, 0, found[0][1] if found else len(text))
    if end > start:
        sections.append(Section(None, (), start, end, text[start:end]))
    for index, (heading, _, body_start) in enumerate(found):
        next_line = found[index + 1][1] if index + 1 < len(found) else len(text)
        start, end = _trimmed(text, body_start, max(body_start, next_line))
        sections.append(Section(heading, soap_of(heading), start, end, text[start:end]))
    return tuple(sections)


class _SectionIndex:
    """Which section's body holds an offset (the last section starting at or before it)."""

    def __init__(self, sections: tuple[Section, ...]) -> None:
        self.sections = sections
        self.starts = [section.start for section in sections]

    def section_at(self, position: int) -> Section | None:
        index = bisect_right(self.starts, position) - 1
        return self.sections[index] if index >= 0 else None

    def heading_at(self, position: int) -> str:
        section = self.section_at(position)
        return _normal_heading(section.heading) if section and section.heading else ""


# --- medication lexicon --------------------------------------------------------------------

# fmt: off
_DRUG_NAMES = _words("""
    lisinopril enalapril ramipril benazepril quinapril captopril fosinopril perindopril losartan
    valsartan irbesartan olmesartan candesartan telmisartan amlodipine nifedipine diltiazem
    verapamil felodipine metoprolol atenolol carvedilol propranolol bisoprolol labetalol
    nebivolol nadolol hydrochlorothiazide hctz chlorthalidone furosemide bumetanide torsemide
    spironolactone eplerenone triamterene indapamide metolazone hydralazine clonidine doxazosin
    terazosin prazosin nitroglycerin digoxin amiodarone sotalol flecainide dofetilide dronedarone
    warfarin apixaban rivaroxaban dabigatran edoxaban heparin enoxaparin clopidogrel prasugrel
    ticagrelor aspirin atorvastatin simvastatin rosuvastatin pravastatin lovastatin ezetimibe
    fenofibrate gemfibrozil niacin ranolazine ivabradine midodrine metformin glipizide glyburide
    glimepiride pioglitazone sitagliptin linagliptin saxagliptin empagliflozin dapagliflozin
    canagliflozin liraglutide semaglutide dulaglutide exenatide tirzepatide insulin albuterol
    levalbuterol ipratropium tiotropium fluticasone budesonide mometasone beclomethasone
    salmeterol formoterol montelukast prednisone prednisolone methylprednisolone dexamethasone
    hydrocortisone benzonatate guaifenesin dextromethorphan cetirizine loratadine fexofenadine
    diphenhydramine hydroxyzine pseudoephedrine omeprazole esomeprazole pantoprazole lansoprazole
    rabeprazole famotidine ranitidine ondansetron metoclopramide prochlorperazine promethazine
    docusate senna sennosides bisacodyl lactulose loperamide sucralfate simethicone dicyclomine
    mesalamine acetaminophen paracetamol ibuprofen naproxen meloxicam diclofenac celecoxib
    ketorolac indomethacin tramadol oxycodone hydrocodone morphine hydromorphone fentanyl codeine
    methadone buprenorphine naloxone gabapentin pregabalin cyclobenzaprine methocarbamol
    tizanidine baclofen lidocaine capsaicin colchicine allopurinol febuxostat sumatriptan
    sertraline fluoxetine citalopram escitalopram paroxetine venlafaxine desvenlafaxine
    duloxetine bupropion mirtazapine trazodone amitriptyline nortriptyline buspirone lorazepam
    alprazolam clonazepam diazepam zolpidem quetiapine olanzapine risperidone aripiprazole
    haloperidol lithium lamotrigine levetiracetam valproate divalproex carbamazepine
    oxcarbazepine topiramate phenytoin donepezil memantine levodopa carbidopa ropinirole
    pramipexole methylphenidate amphetamine melatonin amoxicillin ampicillin penicillin
    cephalexin cefazolin ceftriaxone cefuroxime cefdinir cefepime azithromycin clarithromycin
    erythromycin doxycycline minocycline tetracycline ciprofloxacin levofloxacin moxifloxacin
    trimethoprim sulfamethoxazole nitrofurantoin metronidazole clindamycin vancomycin linezolid
    piperacillin meropenem gentamicin acyclovir valacyclovir oseltamivir fluconazole nystatin
    terbinafine mupirocin ivermectin hydroxychloroquine levothyroxine liothyronine methimazole
    propylthiouracil estradiol progesterone testosterone alendronate medroxyprogesterone
    tamsulosin finasteride oxybutynin sildenafil tadalafil phenazopyridine cyanocobalamin
    multivitamin multivitamins cisplatin carboplatin etoposide paclitaxel docetaxel pemetrexed
    gemcitabine
    cyclophosphamide doxorubicin methotrexate fluorouracil capecitabine tamoxifen anastrozole
    letrozole pembrolizumab nivolumab rituximab trastuzumab bevacizumab imatinib adalimumab
    etanercept infliximab azathioprine mycophenolate tacrolimus cyclosporine epinephrine
    varenicline sacubitril valganciclovir ketoconazole clotrimazole triamcinolone clobetasol
    hydroxyurea amoxicillin-clavulanate
    tylenol advil motrin aleve excedrin lasix bumex demadex aldactone coreg toprol lopressor
    tenormin norvasc cardizem zestril prinivil vasotec altace cozaar diovan benicar avapro
    micardis entresto lipitor zocor crestor pravachol zetia plavix brilinta eliquis xarelto
    pradaxa coumadin lovenox glucophage januvia jardiance farxiga invokana ozempic wegovy
    trulicity victoza mounjaro lantus humalog novolog levemir tresiba basaglar synthroid
    levoxyl prozac zoloft lexapro celexa paxil effexor cymbalta wellbutrin remeron desyrel
    xanax ativan klonopin valium ambien seroquel abilify zyprexa risperdal lamictal keppra
    depakote tegretol topamax dilantin neurontin lyrica flexeril robaxin zanaflex ultram
    percocet norco vicodin oxycontin dilaudid celebrex mobic voltaren toradol prilosec nexium
    protonix pepcid zantac zofran reglan colace senokot dulcolax imodium miralax flomax proscar
    detrol viagra cialis augmentin keflex zithromax bactrim cipro levaquin flagyl macrobid
    valtrex tamiflu diflucan medrol decadron proair ventolin spiriva advair symbicort flovent
    singulair zyrtec claritin allegra benadryl sudafed mucinex humira enbrel remicade plaquenil
    keytruda opdivo narcan chantix adderall ritalin aricept namenda sinemet requip zyloprim
    uloric imitrex lanoxin cordarone imdur nitrostat microzide k-dur klor-con premarin fosamax
    epipen tums maalox mylanta pepto-bismol dramamine z-pak z-pack lotrimin lamisil bengay
""") | frozenset({
    "ferrous sulfate", "ferrous gluconate", "folic acid", "vitamin b12", "vitamin b-12",
    "vitamin d", "vitamin d3", "vitamin c", "potassium chloride", "magnesium oxide",
    "calcium carbonate", "insulin glargine", "insulin lispro", "insulin aspart",
    "insulin detemir", "isosorbide mononitrate", "isosorbide dinitrate", "polyethylene glycol",
    "fish oil", "nicotine patch", "nicotine gum", "icy hot", "sodium bicarbonate",
})
_ALLERGENS = _DRUG_NAMES | _words("""
    sulfa sulfonamides sulfonamide penicillins latex peanuts peanut nuts shellfish eggs egg soy
    wheat gluten bees iodine contrast adhesive tape pollen dust mold cats dogs nsaids opioids
    opiates cephalosporins strawberries fish milk
""")
# fmt: on
_MULTIWORD: dict[str, list[re.Pattern[str]]] = {}
for _name in sorted((n for n in _DRUG_NAMES if " " in n), key=len, reverse=True):
    _MULTIWORD.setdefault(_name.split()[0], []).append(
        re.compile(r"\s+".join(re.escape(part) for part in _name.split()))
    )
_LEXICON_WORDS = frozenset(n for n in _DRUG_NAMES if " " not in n) | frozenset(_MULTIWORD)

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
_BARE_DOSE_UNITS = tuple(
    re.compile(unit + r"\b") for unit in ("mg", "mcg", "micrograms?", "milligrams?", "units", "iu")
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
# fmt: off
_NOT_DRUG_WORDS = _words("""
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


def _drug_mentions(text: str, low: str) -> list[tuple[int, int, str]]:
    """(start, end, name as written) of every lexicon name, the longest name first.

    The words of the note are intersected with the lexicon first, so only the few drug words
    present are looked for (with str.find), rather than testing every word of the note.
    """
    found: dict[int, tuple[int, int, str]] = {}
    words = set(_TOKEN.findall(low))
    combined = {w for w in words if "-" in w and w.split("-")[0] in _DRUG_NAMES}
    for word in (words & _LEXICON_WORDS) | combined:
        position = low.find(word)
        while position != -1:
            end = position + len(word)
            if _is_token_edge(low, position - 1) and _is_token_edge(low, end):
                longer = next(
                    (m for m in map(lambda p: p.match(low, position), _MULTIWORD.get(word, ()))
                     if m and _is_token_edge(low, m.end())),
                    None,
                )  # fmt: skip
                if longer:
                    end = longer.end()
                if longer or word in _DRUG_NAMES or word in combined:
                    found[position] = (position, end, text[position:end])
            position = low.find(word, position + 1)
    mentions = [found[position] for position in sorted(found)]
    # A name inside a longer one found earlier ("vitamin d" in "vitamin d3") is dropped.
    return [m for i, m in enumerate(mentions) if i == 0 or m[0] >= mentions[i - 1][1]]


def _unknown_drugs(text: str, low: str, known: list[tuple[int, int, str]]):
    """Mentions "<Word> <number> <unit>" where the word is neither in the lexicon nor common."""
    for unit in (match for pattern in _BARE_DOSE_UNITS for match in _scan(pattern, low)):
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


def _medications(
    text: str, low: str, index: _SectionIndex, excluded: list[tuple[int, int]]
) -> list[Medication]:
    mentions = _drug_mentions(text, low)
    mentions += _unknown_drugs(text, low, mentions)
    mentions.sort()
    medications: list[Medication] = []
    taken: set[str] = set()
    for number, (start, end, name) in enumerate(mentions):
        key = re.sub(r"[\s-]+", " ", name.lower())
        if key in taken:
            continue  # only the first mention of a drug is kept
        heading = index.heading_at(start)
        if "allerg" in heading or "family" in heading:
            continue
        if any(a <= start < b for a, b in excluded):
            continue
        sentence_start = max(text.rfind(".", 0, start), text.rfind("\n", 0, start), start - 120)
        if _NOT_TAKING.search(text, max(sentence_start, 0), start):
            continue
        limit = min(len(text), end + 100)
        if number + 1 < len(mentions):
            limit = min(limit, mentions[number + 1][0])
        medications.append(_medication(text, start, end, name, limit))
        taken.add(key)
    return medications


# --- vital signs (lower-cased scans) -------------------------------------------------------

_GAP = r"\b[^\d\n]{0,30}?"
_BP_VALUE = r"(?<![\d/])(?P<a>\d{2,3})\s*(?:/|over)\s*(?P<b>\d{2,3})(?!\d)(?:\s*mm\s*hg)?"
_RATE_VALUE = (
    r"(?<![\d.])(?P<a>\d{2,3})(?![\d/s]|\.\d)"
    r"(?:\s*(?:bpm|beats?\s*(?:per|/)\s*min(?:ute)?|/\s*min))?"
)
_TEMP_VALUE = (
    r"(?<![\d.])(?P<a>\d{2,3}(?:\.\d+)?)(?!\d)(?:\s*(?:°|º|degrees?|deg)?\s*"
    r"(?P<u>f(?:ahrenheit)?|c(?:elsius)?|centigrade)\b|\s*(?P<deg>°|º|degrees?))?"
)
_RR_VALUE = (
    r"(?<![\d.])(?P<a>\d{1,2})(?![\d/]|\.\d)(?:\s*(?:breaths?\s*(?:per|/)\s*min(?:ute)?|/\s*min))?"
)
_SPO2_VALUE = r"(?<![\d.])(?P<a>\d{2,3})\s*%"
_WEIGHT_VALUE = (
    r"(?<![\d.])(?P<a>\d{1,3}(?:\.\d+)?)\s*(?P<u>kg|kilograms?|lbs?|pounds?)\b"
    r"(?:\s*(?:and\s+)?(?P<oz>\d{1,2})\s*(?:oz|ounces?)\b)?"
)
_HEIGHT_VALUE = (
    r"(?<![\d.])(?:(?P<ft>\d)\s*(?:'|ft|feet|foot)\s*(?:(?P<inch>\d{1,2}(?:\.\d+)?)\s*"
    r"(?:\"|''|in(?:ches)?)?)?|(?P<a>\d{2,3}(?:\.\d+)?)\s*(?P<u>cm|centimeters?|in(?:ches)?|m)\b)"
)
# One pattern per label, each opening with a literal so that `re` can jump between candidates.
# fmt: off
_LABELLED_VITALS: tuple[tuple[VitalKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(label + _GAP + value)) for kind, value, labels in (
        ("blood_pressure", _BP_VALUE, (r"blood\s+pressures?", "bp")),
        ("heart_rate", _RATE_VALUE, (r"heart\s+rate", "hr", r"pulse(?!\s+ox)(?:\s+rate)?")),
        ("temperature", _TEMP_VALUE, (r"temp(?:erature)?", r"tmax", r"fever(?:\s+of)?")),
        ("respiratory_rate", _RR_VALUE, (r"respiratory\s+rate", r"resp\.?\s+rate",
                                         "respirations", "rr", "resp")),
        ("spo2", _SPO2_VALUE, ("spo2", "sao2", r"o2\s*sat(?:uration)?s?",
                               r"oxygen\s+saturation", r"pulse\s+ox(?:imetry)?",
                               r"sat(?:uration)?s?")),
        ("weight", _WEIGHT_VALUE, (r"weight(?!\s+(?:loss|gain|change|bearing))", "wt",
                                   r"weigh(?:s|ed|ing)")),
        ("height", _HEIGHT_VALUE, ("height", "ht", "stands", "measures")),
    )
    for label in labels
)
# fmt: on
# A number before a unit that says what it measures: "140/70 mmHg", "80 bpm", "97.2 degrees F",
# "5 feet 10 inches tall". Found from the unit (a literal) back to the number.
_ONE_NUMBER = r"(?<![\d.])(?P<a>\d{1,3}(?:\.\d+)?)\s*$"
# fmt: off
_UNIT_VITALS: tuple[tuple[VitalKind, re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (kind, re.compile(unit), re.compile(before)) for kind, unit, before in (
        ("blood_pressure", r"mm\s*hg\b",
         r"(?<![\d./])(?P<a>\d{2,3})\s*/\s*(?P<b>\d{2,3})\s*$"),
        ("heart_rate", r"bpm\b", _ONE_NUMBER),
        ("heart_rate", r"beats?\s*(?:per|/)\s*min(?:ute)?\b", _ONE_NUMBER),
        ("respiratory_rate", r"breaths?\s*(?:per|/)\s*min(?:ute)?\b", _ONE_NUMBER),
        ("temperature", r"[°º]\s*(?P<u>f(?:ahrenheit)?|c(?:elsius)?)\b", _ONE_NUMBER),
        ("temperature", r"degrees?\s*(?P<u>f(?:ahrenheit)?|c(?:elsius)?)\b", _ONE_NUMBER),
        ("height", r"tall\b", r"(?<![\d.])(?P<ft>\d)\s*(?:'|ft|feet|foot)\s*"
                              r"(?P<inch>\d{1,2})\s*(?:\"|''|in(?:ches)?)?\s*$"),
    )
)
# "T 98.6 F", "T: 37.2 C": a bare T needs its unit.
_BARE_T = re.compile(
    r"t(?<![a-z]t)\s*[:=]?\s*(?<![\d.])(?P<a>\d{2,3}(?:\.\d+)?)\s*(?:[°º]|degrees?)?\s*"
    r"(?P<u>f|c)\b"
)
# fmt: on
# fmt: off
_RANGES = {"heart_rate": (20, 250), "respiratory_rate": (4, 80), "spo2": (50, 100),
           "weight": (0.3, 700)}
_UNITS = {"heart_rate": "bpm", "respiratory_rate": "breaths/min", "spo2": "%"}
# fmt: on


def _vital(
    text: str, kind: VitalKind, groups: dict[str, str | None], start: int, end: int
) -> VitalSign | None:
    """The vital sign text[start:end], or None when its value is not plausible for the kind."""
    value_2 = None
    if kind == "blood_pressure":
        value, value_2, unit = float(groups["a"]), float(groups["b"]), "mmHg"
        if not 20 <= value_2 < value <= 300:
            return None
    elif kind == "temperature":
        value = float(groups["a"])
        letter = (groups.get("u") or "")[:1]
        unit = "°C" if letter == "c" or (not letter and value < 50) else "°F"
        low, high = (30, 45) if unit == "°C" else (86, 113)
        if not low <= value <= high:
            return None
    elif kind == "weight":
        value, unit = float(groups["a"]), "kg" if (groups["u"] or "").startswith("k") else "lb"
        if groups.get("oz"):
            value = round(value + int(groups["oz"]) / 16, 2)
    elif kind == "height":
        if groups.get("inch") is not None or groups.get("ft"):
            feet = groups.get("ft") or groups["a"]
            value, unit = int(float(feet)) * 12 + float(groups.get("inch") or 0), "in"
        else:
            value, unit = float(groups["a"]), groups["u"] or ""
            if unit == "m":
                value, unit = value * 100, "cm"
            unit = "cm" if unit.startswith("c") else "in"
        if not 10 <= value <= (275 if unit == "cm" else 108):
            return None
    else:
        value, unit = float(groups["a"]), _UNITS[kind]
    if kind in _RANGES and not _RANGES[kind][0] <= value <= _RANGES[kind][1]:
        return None
    return VitalSign(kind, value, value_2, unit, Span(start, end), text[start:end])


def _vitals(text: str, low: str) -> list[VitalSign]:
    vitals: list[VitalSign] = []

    def add(vital: VitalSign | None) -> None:
        if vital and not any(
            v.kind == vital.kind and v.span.start < vital.span.end and vital.span.start < v.span.end
            for v in vitals
        ):
            vitals.append(vital)

    for kind, pattern in (*_LABELLED_VITALS, ("temperature", _BARE_T)):
        for match in _scan(pattern, low):
            add(_vital(text, kind, match.groupdict(), *match.span()))
    for kind, unit_pattern, before_pattern in _UNIT_VITALS:
        for unit in unit_pattern.finditer(low):
            number = before_pattern.search(low, max(0, unit.start() - 30), unit.start())
            if number:
                groups = {**number.groupdict(), **unit.groupdict()}
                add(_vital(text, kind, groups, number.start(), unit.end()))
    vitals.sort(key=lambda v: v.span.start)
    return _dedup(vitals, lambda v: (v.kind, v.value, v.value_2, v.unit))


# --- allergies -----------------------------------------------------------------------------

_NO_KNOWN_ALLERGIES = tuple(
    re.compile(phrase + r"\b")
    for phrase in (
        "nkda",
        "nka",
        r"no\s+known\s+(?:drug\s+|medication\s+)?allergies",
        r"no\s+(?:drug\s+|medication\s+)?allergies",
        r"denies\s+(?:any\s+)?(?:drug\s+)?allergies",
        r"allergies\s*:\s*(?:none|nil|no known)",
    )
)
_NONE = re.compile(r"\s*(?:none|nil|no)\.?\s*", re.I)
_ALLERGY_CUES = tuple(
    re.compile(phrase + r"\s*")
    for phrase in (r"allerg(?:ic|y|ies)\s+to", r"allergies\s*:", r"sensitivity\s+to",
                   r"intolerant\s+to")
)  # fmt: skip
_ALLERGY_WORD = re.compile(r"allerg(?:y|ies)\b")
_ALLERGEN_BEFORE = re.compile(r"(?<![a-z-])(?P<s>[a-z][a-z-]+(?:\s+drugs)?)\s+$")
_ALLERGY_SEPARATOR = re.compile(r"(,|;|\band\b|\bor\b|\n)(?![^(]*\))", re.I)
_ALLERGY_ITEM = re.compile(
    r"^(?:[-•*]\s*)?(?P<s>[A-Za-z][A-Za-z0-9 '/-]*?)\s*(?:\((?P<r1>[^)]{1,60})\)|"
    r"(?:\s*[-:–]\s*|\s+(?:causes?|causing|caused|with|results? in|->)\s+)"
    r"(?P<r2>[A-Za-z][A-Za-z '/-]{0,60}))?\s*$",
    re.I,
)
_NOT_A_SUBSTANCE = re.compile(
    r"^(?:none|nkda|nka|no known.*|unknown|not known|n/?a|reviewed|see above)$|"
    r"\b(?:no|not|none|other|any|has|have|had|is|are|was|were|allerg\w*|reports?|denies)\b",
    re.I,
)
_ALLERGY_CLAUSE_END = re.compile(
    r"\n|;|(?<!\b[A-Za-z])\.(?=\s|$)|,?\s+(?:and|but)\s+(?:has|is|was|had|reports|denies|"
    r"no|not|she|he|they|the)\b|,\s*(?:which|who|that)\b",
    re.I,
)


def _allergy_list(text: str, start: int, end: int) -> list[Allergy]:
    """Items of an allergy list in text[start:end]: "sulfa (rash), codeine - nausea"."""
    allergies = []
    position = start
    for piece in _ALLERGY_SEPARATOR.split(text[start:end]):
        piece_start, position = position, position + len(piece)
        if not piece.strip() or _ALLERGY_SEPARATOR.fullmatch(piece):
            continue
        item_start, item_end = _trimmed(text, piece_start, position)
        while item_end > item_start and text[item_end - 1] == ".":
            item_end -= 1
        match = _ALLERGY_ITEM.match(text[item_start:item_end])
        if not match:
            continue
        substance = match.group("s").strip()
        if len(substance.split()) > 4 or _NOT_A_SUBSTANCE.search(substance):
            continue
        reaction = (match.group("r1") or match.group("r2") or "").strip() or None
        span = Span(item_start, item_end)
        allergies.append(Allergy(substance, reaction, span, text[item_start:item_end]))
    return allergies


def _allergies(text: str, low: str, sections: tuple[Section, ...]) -> tuple[list[Allergy], bool]:
    allergies: list[Allergy] = []
    no_known = _any_match(_NO_KNOWN_ALLERGIES, low, 0, len(low))
    for section in sections:
        if section.heading and "allerg" in section.heading.lower():
            if _NONE.fullmatch(section.text):
                no_known = True
            elif not _any_match(_NO_KNOWN_ALLERGIES, low, section.start, section.end):
                allergies += _allergy_list(text, section.start, section.end)
    for cue in (match for pattern in _ALLERGY_CUES for match in _scan(pattern, low)):
        if low[max(0, cue.start() - 25) : cue.start()].rstrip().endswith(("no", "denies")):
            continue
        stop = _ALLERGY_CLAUSE_END.search(text, cue.end())
        allergies += _allergy_list(text, cue.end(), stop.start() if stop else len(text))
    for word in _scan(_ALLERGY_WORD, low):  # "penicillin allergy"
        before = _ALLERGEN_BEFORE.search(low, max(0, word.start() - 30), word.start())
        if before and before.group("s").split()[0] in _ALLERGENS:
            start, end = before.span("s")
            allergies.append(Allergy(text[start:end], None, Span(start, end), text[start:end]))
    allergies.sort(key=lambda a: a.span.start)
    return _dedup(allergies, lambda a: a.substance.lower()), no_known


# --- diagnoses -----------------------------------------------------------------------------

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
_CAUSAL_SPLIT = re.compile(
    r",?\s+(?:(?:most|more)\s+)?(?:likely\s+|probably\s+|possibly\s+)?"
    r"(?:due\s+to|secondary\s+to)\s+",
    re.I,
)
_LEADING_QUALIFIER = re.compile(  # used with match(text, pos): no "^"
    r"(?:(?:a|an|the|his|her|their|this|rare|associated|newly\s+diagnosed|"
    r"recently\s+diagnosed|known|h/o|history\s+of)\s+)+",
    re.I,
)
_TRAILING_DATE = re.compile(
    r"(?:,?\s+(?:in|on|since|from)\s+(?:\d{1,2}/)?\d{4}\b.*|,?\s+\d{4}$|\s+\d{1,2}/\d{4}.*"
    r"|,?\s+(?:in\s+|on\s+)?\[\*\*.*)$"  # and de-identified dates: "in [**2173-7-14**]"
)
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
_DIAGNOSIS_INLINE = tuple(
    re.compile(label + r"\s*:\s*")
    for label in (r"diagnos[ie]s", "dx", "pmh", "past medical history", "problem list")
)
_NEGATED_BEFORE = re.compile(
    r"\b(?:denies|denied|deny|no|not|negative\s+for|without|rule\s+out|r/o)\b"
    r"(?:\s+(?:a|any|personal|prior))*\s*$",
    re.I,
)
_FAMILY = re.compile(
    r"\b(?:family|mother|father|mom|dad|brother|sister|sibling|son|daughter|grand\w+|aunt|"
    r"uncle|cousin|parent)s?\b",
    re.I,
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
_KEY_DROP = _words("""
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
        a, b = _trimmed(text, piece_start, piece_end)
        while b > a and text[b - 1] in ".,;:":
            b -= 1
        name = text[a:b]
        if name and _looks_like_problem(name):
            problems.append(Diagnosis(name, Span(a, b), name))
    return problems


def _assessment_problems(text: str, section: Section) -> list[Diagnosis]:
    """Numbered or bulleted items, "Problem: plan" lines and short problem paragraphs."""
    problems = []
    for line_start, line_end in _lines(text, section.start, section.end):
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
    for line_start, line_end in _lines(text, section.start, section.end):
        start, end = _trimmed(text, line_start, line_end)
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
        for separator in re.finditer(r"\s*[,;]\s*", text[position:end]):
            problems += _problem(text, position, position + separator.start())
            position += separator.end()
        problems += _problem(text, position, end)
    return problems


def _diagnoses(text: str, low: str, sections: tuple[Section, ...]) -> list[Diagnosis]:
    problems: list[Diagnosis] = []
    index = _SectionIndex(sections)
    for section in sections:
        heading = _normal_heading(section.heading) if section.heading else ""
        if "A" in section.soap:
            problems += _assessment_problems(text, section)
        elif _MEDICAL_HISTORY.search(heading) and "family" not in heading:
            problems += _history_items(text, section)
    # Phrases, each pattern scanned once over the whole note and placed in its section.
    cues = [(m, False) for p in _HISTORY_PHRASES for m in _scan(p, low)]
    cues += [(m, False) for m in _scan(_HISTORY_OF, low)]
    cues += [(m, True) for p in _DIAGNOSIS_INLINE for m in _scan(p, low)]
    for cue, labelled in cues:
        section = index.section_at(cue.start())
        heading = _normal_heading(section.heading) if section and section.heading else ""
        if section is None or cue.start() >= section.end or "family" in heading:
            continue  # outside a body (a heading line), or family history
        if labelled:  # "Diagnosis: X" in the text of a non-assessment section
            if "A" not in section.soap:
                problems += _phrase_list(text, cue.end(), section.end)
            continue
        # In a narrative, "history of" is as often a symptom's history: only in a history list.
        if cue.re is _HISTORY_OF and not _MEDICAL_HISTORY.search(heading):
            continue
        sentence_start = max(
            text.rfind(". ", section.start, cue.start()),
            text.rfind("\n", section.start, cue.start()),
            section.start,
        )
        before = text[sentence_start : cue.start()]
        if _NEGATED_BEFORE.search(before) or _FAMILY.search(before):
            continue
        problems += _phrase_list(text, cue.end(), section.end)
    problems.sort(key=lambda d: d.span.start)
    return _dedup(problems, lambda d: diagnosis_key(d.name))


def extract_facts(text: str, sections: tuple[Section, ...]) -> Facts:
    low = _lowered(text)
    allergies, no_known = _allergies(text, low, sections)
    excluded = [(a.span.start, a.span.end) for a in allergies]
    return Facts(
        vitals=tuple(_vitals(text, low)),
        medications=tuple(_medications(text, low, _SectionIndex(sections), excluded)),
        diagnoses=tuple(_diagnoses(text, low, sections)),
        allergies=tuple(allergies),
        no_known_allergies=no_known,
    )


# --- classification ------------------------------------------------------------------------

# fmt: off
_HEADING_CUES: tuple[tuple[NoteType, int, re.Pattern[str]], ...] = (
    ("discharge", 4, re.compile(r"discharge summary|hospital course|discharge (?:diagnos|"
                                r"medication|instruction|condition)|condition at discharge")),
    ("procedure", 4, re.compile(r"procedure note|operative (?:note|report|findings)|"
                                r"(?:pre|post)-?operative diagnosis|^procedures? performed$|"
                                r"^procedure$|estimated blood loss|^anesthesia$|^specimens?$")),
    ("admission", 4, re.compile(r"history and physical|^h&p$|admission (?:note|diagnosis|orders)|"
                                r"reason for admission|admitting diagnosis|"
                                r"medications on admission")),
    ("consult", 4, re.compile(r"consult|reason for referral")),
    ("progress", 4, re.compile(r"progress note|interval history")),
    ("progress", 1, re.compile(r"^(?:s|subjective)$")),
)
# Each phrase opens with a literal, so `re` jumps between candidates instead of trying every
# position; "before" is what must come just before the phrase (checked on a short slice).
_WAS = r"(?:was|is|been|being|were) $"
_CUE_TABLE: tuple[tuple[NoteType, int, str, str | None], ...] = (
    ("discharge", 3, r"discharge summary\b", None),
    ("discharge", 3, r"discharged\s+(?:home|to)\b", None),
    ("discharge", 3, r"discharge date\b", None),
    ("discharge", 3, r"date of discharge\b", None),
    ("discharge", 3, r"day of discharge\b", None),
    ("discharge", 3, r"hospital course\b", None),
    ("procedure", 3, r"procedure note\b", None),
    ("procedure", 3, r"operative (?:note|report)\b", None),
    ("procedure", 3, r"pre-?operative diagnosis\b", None),
    ("procedure", 3, r"post-?operative diagnosis\b", None),
    ("procedure", 3, r"procedure performed\b", None),
    ("procedure", 3, r"estimated blood loss\b", None),
    ("procedure", 3, r"ebl\b", None),
    ("procedure", 3, r"indications? for (?:the )?procedure\b", None),
    ("procedure", 3, r"operating room\b", r"(?:brought|taken) to the $"),
    ("procedure", 1, r"informed consent was obtained\b", None),
    ("procedure", 1, r"tolerated the procedure\b", None),
    ("admission", 3, r"history and physical\b", None),
    ("admission", 3, r"h&p\b", None),
    ("admission", 3, r"admission (?:note|date|diagnosis|orders)\b", None),
    ("admission", 3, r"date of admission\b", None),
    ("admission", 3, r"admitting diagnosis\b", None),
    ("admission", 3, r"reason for admission\b", None),
    ("admission", 3, r"admitted\s+(?:to|for|with|on|from)\b", _WAS),
    ("admission", 3, r"admit(?:ted)? to (?:the )?(?:medicine|hospitalist|icu|floor|telemetry)\b",
     None),
    ("consult", 3, r"consult(?:ation)?\s+(?:note|requested|request)\b", None),
    ("consult", 3, r"reason for (?:consult(?:ation)?|referral)\b", None),
    ("consult", 3, r"seen in consultation\b", None),
    ("consult", 3, r"asked to (?:see|evaluate)\b", None),
    ("consult", 3, r"at the request of\b", None),
    ("consult", 3, r"referred\s+(?:by|from)\b", None),
    ("consult", 3, r"referred\b(?!\s+(?:by|from)\b)", _WAS),
    ("consult", 3, r"who referred\b", None),
    ("consult", 3, r"referral to (?:me|us|our)\b", None),
    ("consult", 3, r"new patient\b", None),
    ("consult", 3, r"thank you for (?:the|this|your) (?:referral|consult\w*)\b", None),
    ("consult", 1, r"evaluation of\b", r"(?:presents?|presenting|here|seen|comes? in)"
                   r"(?: to (?:the )?(?:clinic|office))?(?: today)? for (?:the |an |a )?$"),
    ("progress", 3, r"progress note\b", None),
    ("progress", 3, r"interval history\b", None),
    ("progress", 3, r"follow[- ]?up (?:visit|of|for|appointment)\b", None),
    ("progress", 3, r"follow[- ]?up\b(?! (?:visit|of|for|appointment)\b)",
     r"(?:presents?|here|returns?|seen)(?: today)? for (?:a |his |her |their )?(?:routine )?$"),
    ("progress", 3, r"since (?:the|his|her) last visit\b", None),
    ("progress", 2, r"annual (?:exam|examination|physical|visit|wellness)\b", None),
    ("progress", 2, r"chronic problems\b", None),
    ("progress", 2, r"hospital day\b", None),
)
# fmt: on
_PHRASE_CUES = tuple(
    (kind, weight, re.compile(phrase), re.compile(before) if before else None)
    for kind, weight, phrase, before in _CUE_TABLE
)
_ONGOING_CARE = tuple(
    re.compile(phrase)
    for phrase in (
        r"medical history (?:significant|notable) for",
        r"regarding (?:his|her|their) \w+",
        r"in terms of (?:his|her|their) \w+",
        r"with regard to (?:his|her|their) \w+",
        r"as for (?:his|her|their) \w+",
        r"continues? (?:with |taking |to take |on )?(?P<drug>[a-z][\w-]+)",
    )
)
_TITLES: tuple[tuple[NoteType, re.Pattern[str]], ...] = (
    ("discharge", re.compile(r"\bdischarge summary\b")),
    ("procedure", re.compile(r"\b(?:operative|procedure|op) (?:note|report)\b")),
    ("admission", re.compile(r"\b(?:history and physical|h&p|admission note)\b")),
    ("consult", re.compile(r"\bconsult(?:ation)?\b")),
    ("progress", re.compile(r"\bprogress note\b")),
)
_FOLLOW_UP_COMPLAINT = re.compile(r"follow[- ]?up\b", re.I)
_COMPLAINT_HEADING = re.compile(r"chief complaint|cc$|reason for visit")
_PRIORITY: tuple[NoteType, ...] = ("discharge", "procedure", "admission", "consult", "progress")


def classify(text: str, sections: tuple[Section, ...]) -> Classification:
    """The note type with the most weighted cues; ties go to the earlier type in _PRIORITY.

    Strong cues (3-4): headings and set phrases of each type. Weak cues: "presents for the
    evaluation of" (consult, 1) and at most two signs of ongoing care (progress, 1 each):
    "Regarding his diabetes", "past medical history significant for", "continue <drug>". A
    visit note with no cue at all (subjective plus assessment or plan sections) is a progress
    note; anything else without a cue is "other".
    """
    low = _lowered(text)
    scores: dict[NoteType, int] = dict.fromkeys(_PRIORITY, 0)
    evidence: dict[NoteType, list[tuple[int, str]]] = {kind: [] for kind in _PRIORITY}

    def cue(kind: NoteType, weight: int, position: int, reason: str) -> None:
        scores[kind] += weight
        evidence[kind].append((position, reason))

    if sections and sections[0].heading is None:  # a title: "Psych Consult - Depression"
        for line_start, line_end in list(_lines(text, sections[0].start, sections[0].end))[:5]:
            line = low[line_start:line_end]
            if len(line.split()) <= 8:
                kind = next((kind for kind, title in _TITLES if title.search(line)), None)
                if kind:
                    cue(kind, 3, line_start, f'title "{text[line_start:line_end].strip()}"')
    for section in sections:
        if not section.heading:
            continue
        heading = _normal_heading(section.heading)
        for kind, weight, pattern in _HEADING_CUES:
            if pattern.search(heading):
                cue(kind, weight, section.start, f'heading "{section.heading}"')
                break
        if _COMPLAINT_HEADING.match(heading) and _FOLLOW_UP_COMPLAINT.match(section.text):
            cue("progress", 3, section.start, f'chief complaint "{section.text[:40]}"')
    for kind, weight, pattern, before in _PHRASE_CUES:
        for match in _scan(pattern, low):
            start = match.start()
            if before:
                lead = before.search(low, max(0, start - 60), start)
                if lead is None or not _word_start(low, lead.start()):
                    continue
                start = lead.start()
            phrase = text[start : match.end()]
            cue(kind, weight, start, f'phrase "{phrase}" at {start}')
    ongoing = sorted(
        (match.start(), match.end())
        for pattern in _ONGOING_CARE
        for match in _scan(pattern, low)
        if match.groupdict().get("drug") is None or match.group("drug") in _DRUG_NAMES
    )
    for start, end in ongoing[:2]:
        cue("progress", 1, start, f'ongoing care "{text[start:end]}" at {start}')

    best = max(_PRIORITY, key=lambda kind: (scores[kind], -_PRIORITY.index(kind)))
    if scores[best] > 0:
        reasons = [reason for _, reason in sorted(evidence[best])][:6]
        others = ", ".join(f"{k} {v}" for k, v in scores.items() if v and k != best)
        reasons.append(f"score {best} {scores[best]}" + (f" vs {others}" if others else ""))
        return Classification(best, tuple(reasons))
    letters = {letter for section in sections for letter in section.soap}
    if "S" in letters and letters & {"A", "P"}:
        opening = next(s.heading for s in sections if "S" in s.soap)
        closing = next(s.heading for s in sections if set(s.soap) & {"A", "P"})
        return Classification(
            "progress",
            (
                f'no type-specific heading or phrase; visit-note layout ("{opening}" ... '
                f'"{closing}") defaults to progress',
            ),
        )
    return Classification(
        "other",
        (
            "no heading or phrase indicating admission, progress, consult, procedure or "
            "discharge, and no visit-note layout (subjective plus assessment or plan sections)",
        ),
    )


def analyse(text: str) -> NoteAnalysis:
    sections = split_sections(text)
    return NoteAnalysis(sections, classify(text, sections), extract_facts(text, sections))
