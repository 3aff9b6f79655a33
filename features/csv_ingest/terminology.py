"""Code CSV terms (condition and observation names) in SNOMED CT and LOINC.

Two implementations of one interface: `BuiltinTerminology`, a table of common conditions and
observations in this module, and `TerminologyServer`, which asks a FHIR R4 terminology server
(`ConceptMap/$translate`, then `CodeSystem/$lookup` for the official display) when
TERMINOLOGY_URL is set. A term neither knows becomes a text-only CodeableConcept: a wrong code
in a clinical record is worse than no code.

Every code in the table was checked against a source, named by `TableEntry.sources`:
- synthea-bundle: the Synthea FHIR bundles in shared/data/synthea (real codings with displays).
- synthea-gbd: Synthea's `src/main/resources/gbd_disability_weights.csv` (SNOMED code, display).
- synthea-copd: Synthea's `src/main/resources/modules/copd.json`.
- r4-examples: the FHIR R4 example resources (npm package hl7.fhir.r4.examples 4.0.1).
- ips: the International Patient Summary IG (npm package hl7.fhir.uv.ips 2.0.0).
- us-core: US Core 3.1.0 example Observation/blood-glucose (LOINC's display in its narrative).
- fhir-ldl-vs: the FHIR ValueSet lipid-ldl-codes, expanded by tx.fhir.org (LOINC 2.80).
- livd: the HL7 LIVD example ValueSet of test codes (LOINC 2.65).
- consensus: no official source at hand, but the same code with the same meaning in several
  independent public clinical code bases, and a code the author knew; kept because these are
  among the most used codes in primary care. A reviewer with a SNOMED/LOINC browser should
  confirm these first.
Codes that could not be confirmed were left out rather than guessed.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import httpx
import structlog

from app.clients.fhir import FHIRClient, FHIRTimeout, FHIRUnavailable

log = structlog.get_logger(__name__)

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
# The code system of the terms as CSV files write them: $translate maps from it.
LOCAL_TERMS_SYSTEM = "urn:clinical-backend:csv-terms"
FHIR_JSON = "application/fhir+json"
CACHE_SIZE = 4096

Kind = Literal["condition", "observation"]
K = TypeVar("K")
V = TypeVar("V")

SOURCES: Mapping[str, str] = {
    "synthea-bundle": "Synthea FHIR bundles in shared/data/synthea",
    "synthea-gbd": "synthetichealth/synthea src/main/resources/gbd_disability_weights.csv",
    "synthea-copd": "synthetichealth/synthea src/main/resources/modules/copd.json",
    "r4-examples": "FHIR R4 examples, npm hl7.fhir.r4.examples 4.0.1",
    "ips": "International Patient Summary IG, npm hl7.fhir.uv.ips 2.0.0",
    "us-core": "US Core 3.1.0 example Observation/blood-glucose",
    "fhir-ldl-vs": "FHIR ValueSet lipid-ldl-codes expanded by tx.fhir.org (LOINC 2.80)",
    "livd": "HL7 LIVD example ValueSet testcode-mappings-livd (LOINC 2.65)",
    "consensus": "several independent public code bases agree; not an official source",
}


# --- concepts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    code: str
    display: str

    def to_fhir(self) -> dict[str, str]:
        coding = {"system": self.system, "code": self.code}
        if self.display:  # a server may know a code without a display: say nothing, not ""
            coding["display"] = self.display
        return coding


@dataclass(frozen=True, slots=True)
class Concept:
    text: str  # the term as the CSV wrote it (stripped)
    codings: tuple[Coding, ...] = ()  # empty: unmapped
    category: str | None = None  # observations: an observation-category code, e.g. vital-signs
    components: tuple[Concept, ...] = ()  # blood pressure: (systolic, diastolic)

    @property
    def mapped(self) -> bool:
        return bool(self.codings)

    def to_codeable_concept(self) -> dict[str, Any]:
        if not self.codings:
            return {"text": self.text}
        return {"coding": [coding.to_fhir() for coding in self.codings], "text": self.text}


class Terminology(Protocol):
    async def condition(self, term: str) -> Concept: ...
    async def observation(self, term: str) -> Concept: ...
    async def aclose(self) -> None: ...


class TerminologyUnavailable(Exception):
    """The terminology server could not be asked (down, too slow, failing).

    `reason` is short and safe to show: it never holds the server's address or a term.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
# Bullets, quotes and trailing full stops people leave around a term; brackets stay, since
# "(calculated)" or "[Score]" can end a real name.
_EDGE_CHARACTERS = " .,;:!?'\"`*_-\u2013\u2014/\\|~\u00b7\u2022"


def normalise_term(term: str) -> str:
    """The lookup key of a term: casefolded, inner whitespace collapsed, edges stripped."""
    text = unicodedata.normalize("NFKC", term).translate(_QUOTES)
    # Zero-width and other invisible format characters come with text pasted from documents.
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.casefold().split()).strip(_EDGE_CHARACTERS)


# --- the built-in table ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableEntry:
    kind: Kind
    codings: tuple[Coding, ...]
    names: tuple[str, ...]  # the preferred name first, then every way a CSV may write it
    sources: tuple[str, ...]
    category: str | None = None
    components: tuple[TableEntry, ...] = ()

    def concept(self, text: str) -> Concept:
        return Concept(
            text=text,
            codings=self.codings,
            category=self.category,
            components=tuple(part.concept(part.names[0]) for part in self.components),
        )


def _sct(code: str, display: str) -> Coding:
    return Coding(SNOMED, code, display)


def _loinc(code: str, display: str) -> Coding:
    return Coding(LOINC, code, display)


def _disorder(code: str, display: str, *names: str, sources: tuple[str, ...]) -> TableEntry:
    return TableEntry("condition", (_sct(code, display),), (display, *names), sources)


def _vital(
    codings: tuple[Coding, ...],
    *names: str,
    sources: tuple[str, ...],
    components: tuple[TableEntry, ...] = (),
) -> TableEntry:
    return TableEntry(
        "observation", codings, (codings[0].display, *names), sources, "vital-signs", components
    )


def _lab(code: str, display: str, *names: str, sources: tuple[str, ...]) -> TableEntry:
    return TableEntry(
        "observation", (_loinc(code, display),), (display, *names), sources, "laboratory"
    )


BUNDLE, GBD, COPD, R4, IPS = "synthea-bundle", "synthea-gbd", "synthea-copd", "r4-examples", "ips"
CONSENSUS = "consensus"

# Displays are the confirming source's term without the SNOMED semantic tag ("(disorder)").
CONDITIONS: tuple[TableEntry, ...] = (
    _disorder("38341003", "Hypertension", "high blood pressure", "htn", "hypertensive disorder",
              "arterial hypertension", "hypertensive disorder, systemic arterial",
              sources=(BUNDLE,)),
    _disorder("44054006", "Diabetes mellitus type 2", "type 2 diabetes mellitus",
              "type 2 diabetes", "type ii diabetes mellitus", "type ii diabetes",
              "diabetes type 2", "diabetes mellitus type ii", "t2dm", "t2d", "dm2", "dm type 2",
              "niddm", "non-insulin dependent diabetes mellitus", sources=(R4, GBD)),
    _disorder("46635009", "Diabetes mellitus type 1", "type 1 diabetes mellitus",
              "type 1 diabetes", "type i diabetes mellitus", "type i diabetes",
              "diabetes type 1", "diabetes mellitus type i", "t1dm", "t1d", "dm1", "dm type 1",
              "iddm", "insulin dependent diabetes mellitus", sources=(CONSENSUS,)),
    _disorder("73211009", "Diabetes mellitus", "diabetes", sources=(R4,)),
    _disorder("15777000", "Prediabetes", "pre-diabetes", sources=(BUNDLE, GBD)),
    _disorder("414916001", "Obesity", sources=(R4,)),
    _disorder("55822004", "Hyperlipidemia", "hyperlipidaemia", sources=(CONSENSUS,)),
    _disorder("13644009", "Hypercholesterolemia", "hypercholesterolaemia", "high cholesterol",
              sources=(CONSENSUS,)),
    _disorder("40930008", "Hypothyroidism", "underactive thyroid", sources=(GBD, R4)),
    _disorder("34486009", "Hyperthyroidism", "overactive thyroid", sources=(CONSENSUS,)),
    _disorder("90560007", "Gout", sources=(GBD,)),
    _disorder("22298006", "Myocardial infarction", "heart attack", "myocardial infarct",
              sources=(GBD, R4)),
    _disorder("53741008", "Coronary arteriosclerosis", "coronary artery disease", "cad",
              "coronary heart disease", "chd", sources=(GBD, CONSENSUS)),
    _disorder("84114007", "Heart failure", "cardiac failure", sources=(CONSENSUS,)),
    _disorder("42343007", "Congestive heart failure", "chf", "congestive cardiac failure",
              sources=(CONSENSUS,)),
    _disorder("88805009", "Chronic congestive heart failure", sources=(GBD,)),
    _disorder("49436004", "Atrial fibrillation", "afib", "a-fib", "a fib", sources=(GBD,)),
    _disorder("230690007", "Stroke", "cerebrovascular accident", "cva", sources=(GBD,)),
    _disorder("195967001", "Asthma", "bronchial asthma", sources=(GBD,)),
    _disorder("13645005", "Chronic obstructive lung disease", "copd",
              "chronic obstructive pulmonary disease", "chronic obstructive airway disease",
              sources=(CONSENSUS,)),
    _disorder("87433001", "Pulmonary emphysema", "emphysema", sources=(COPD, GBD)),
    _disorder("185086009", "Chronic obstructive bronchitis", sources=(COPD, GBD)),
    _disorder("10509002", "Acute bronchitis", sources=(BUNDLE, GBD)),
    _disorder("233604007", "Pneumonia", sources=(GBD,)),
    _disorder("36971009", "Sinusitis", sources=(BUNDLE, GBD)),
    _disorder("40055000", "Chronic sinusitis", sources=(BUNDLE, GBD)),
    _disorder("444814009", "Viral sinusitis", sources=(BUNDLE, GBD)),
    _disorder("195662009", "Acute viral pharyngitis", sources=(BUNDLE, GBD)),
    _disorder("43878008", "Streptococcal sore throat", "strep throat",
              "streptococcal pharyngitis", sources=(GBD,)),
    _disorder("65363002", "Otitis media", "middle ear infection", sources=(GBD, R4)),
    _disorder("61582004", "Allergic rhinitis", sources=(CONSENSUS,)),
    _disorder("446096008", "Perennial allergic rhinitis", sources=(GBD,)),
    _disorder("78275009", "Obstructive sleep apnea syndrome", "obstructive sleep apnea",
              "obstructive sleep apnoea", "osa", sources=(CONSENSUS,)),
    _disorder("190905008", "Cystic fibrosis", sources=(GBD,)),
    _disorder("709044004", "Chronic kidney disease", "ckd", sources=(CONSENSUS,)),
    _disorder("431855005", "Chronic kidney disease stage 1", "ckd stage 1", sources=(GBD,)),
    _disorder("431856006", "Chronic kidney disease stage 2", "ckd stage 2", sources=(GBD,)),
    _disorder("433144002", "Chronic kidney disease stage 3", "ckd stage 3", sources=(GBD,)),
    _disorder("431857002", "Chronic kidney disease stage 4", "ckd stage 4", sources=(GBD,)),
    _disorder("46177005", "End stage renal disease", "end-stage renal disease", "esrd",
              sources=(GBD,)),
    _disorder("68566005", "Urinary tract infection", "uti", "urinary tract infectious disease",
              sources=(CONSENSUS,)),
    _disorder("38822007", "Cystitis", sources=(GBD,)),
    _disorder("235595009", "Gastroesophageal reflux disease", "gerd", "gord",
              "gastro-oesophageal reflux disease", "gastro-esophageal reflux disease",
              sources=(CONSENSUS,)),
    _disorder("74400008", "Appendicitis", sources=(GBD,)),
    _disorder("235919008", "Cholelithiasis", "gallstones", sources=(GBD,)),
    _disorder("271737000", "Anemia", "anaemia", sources=(BUNDLE, GBD)),
    _disorder("84757009", "Epilepsy", sources=(GBD, R4)),
    _disorder("128613002", "Seizure disorder", sources=(GBD,)),
    _disorder("37796009", "Migraine", sources=(CONSENSUS,)),
    _disorder("26929004", "Alzheimer's disease", "alzheimers disease", "alzheimer disease",
              "alzheimer's", "alzheimers", sources=(GBD,)),
    _disorder("52448006", "Dementia", sources=(CONSENSUS,)),
    _disorder("49049000", "Parkinson's disease", "parkinsons disease", "parkinson disease",
              "parkinson's", "parkinsons", sources=(CONSENSUS,)),
    _disorder("35489007", "Depressive disorder", "depression", sources=(CONSENSUS,)),
    _disorder("370143000", "Major depressive disorder", "major depression", "mdd",
              "major depression disorder", sources=(GBD,)),
    _disorder("197480006", "Anxiety disorder", sources=(CONSENSUS,)),
    _disorder("47505003", "Posttraumatic stress disorder", "post-traumatic stress disorder",
              "post traumatic stress disorder", "ptsd", sources=(GBD,)),
    _disorder("7200002", "Alcoholism", sources=(GBD,)),
    _disorder("5602001", "Opioid abuse", sources=(GBD,)),
    _disorder("396275006", "Osteoarthritis", sources=(CONSENSUS,)),
    _disorder("239873007", "Osteoarthritis of knee", "knee osteoarthritis", sources=(GBD,)),
    _disorder("239872002", "Osteoarthritis of hip", "hip osteoarthritis", sources=(GBD,)),
    _disorder("69896004", "Rheumatoid arthritis", sources=(GBD,)),
    _disorder("64859006", "Osteoporosis", sources=(GBD,)),
    _disorder("200936003", "Lupus erythematosus", "lupus", sources=(GBD,)),
    _disorder("24079001", "Atopic dermatitis", sources=(GBD,)),
    _disorder("82423001", "Chronic pain", sources=(GBD, R4)),
    _disorder("44465007", "Sprain of ankle", "ankle sprain", "sprained ankle",
              sources=(BUNDLE, GBD)),
    _disorder("386661006", "Fever", "pyrexia", sources=(R4,)),
)  # fmt: skip

SYSTOLIC_BLOOD_PRESSURE = _vital(
    (_loinc("8480-6", "Systolic blood pressure"), _sct("271649006", "Systolic blood pressure")),
    "systolic", "systolic bp", "sbp", "bp systolic",
    sources=(BUNDLE, R4, IPS),
)  # fmt: skip
DIASTOLIC_BLOOD_PRESSURE = _vital(
    (_loinc("8462-4", "Diastolic blood pressure"), _sct("271650006", "Diastolic blood pressure")),
    "diastolic", "diastolic bp", "dbp", "bp diastolic",
    sources=(BUNDLE, R4, IPS, CONSENSUS),
)  # fmt: skip

# LOINC first: the FHIR vital-signs profiles key on the LOINC code. The SNOMED codes of vital
# signs are observable entities; only those checked are here.
OBSERVATIONS: tuple[TableEntry, ...] = (
    _vital((_loinc("29463-7", "Body weight"), _sct("27113001", "Body weight")),
           "weight", "wt", "bodyweight", sources=(BUNDLE, R4, IPS)),
    _vital((_loinc("8302-2", "Body height"), _sct("50373000", "Body height")),
           "height", "ht", "stature", sources=(BUNDLE, R4, CONSENSUS)),
    _vital((_loinc("39156-5", "Body mass index (BMI) [Ratio]"),
            _sct("60621009", "Body mass index")),
           "body mass index", "bmi", sources=(BUNDLE, R4, IPS, CONSENSUS)),
    _vital((_loinc("8867-4", "Heart rate"), _sct("364075005", "Heart rate")),
           "hr", "pulse", "pulse rate", sources=(R4, CONSENSUS)),
    _vital((_loinc("9279-1", "Respiratory rate"), _sct("86290005", "Respiratory rate")),
           "rr", "resp rate", "respiration rate", "respirations", "breathing rate",
           sources=(R4, CONSENSUS)),
    _vital((_loinc("8310-5", "Body temperature"), _sct("386725007", "Body temperature")),
           "temperature", "temp", "body temp", sources=(R4, CONSENSUS)),
    # 2708-6 is what the FHIR R4 oxygen-saturation profile requires; 59408-5 says it was
    # measured by pulse oximetry, which is what SpO2 means.
    _vital((_loinc("2708-6", "Oxygen saturation in Arterial blood"),
            _loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            _sct("431314004", "Peripheral oxygen saturation")),
           "oxygen saturation", "spo2", "o2 saturation", "o2 sat", "oxygen sat", "sats",
           "pulse oximetry", "pulse ox", sources=(R4, CONSENSUS)),
    _vital((_loinc("85354-9", "Blood pressure panel with all children optional"),
            _sct("75367002", "Blood pressure")),
           "blood pressure", "bp", "b/p", sources=(R4, IPS, CONSENSUS),
           components=(SYSTOLIC_BLOOD_PRESSURE, DIASTOLIC_BLOOD_PRESSURE)),
    SYSTOLIC_BLOOD_PRESSURE,
    DIASTOLIC_BLOOD_PRESSURE,
    _vital((_loinc("8478-0", "Mean blood pressure"),),
           "mean arterial pressure", "map", sources=(R4,)),
    _vital((_loinc("9843-4", "Head Occipital-frontal circumference"),),
           "head circumference", "occipitofrontal circumference", "ofc", sources=(R4,)),
    # Synthea files the pain score under vital signs; so do we.
    _vital((_loinc("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),),
           "pain score", "pain severity", "pain scale", "pain", sources=(BUNDLE,)),
    TableEntry("observation", (_loinc("72166-2", "Tobacco smoking status"),),
               ("Tobacco smoking status", "smoking status", "tobacco smoking status nhis",
                "smoking"), (IPS, BUNDLE), "social-history"),
    _lab("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "hba1c", "hb a1c", "hgba1c",
         "a1c", "hemoglobin a1c", "haemoglobin a1c", "glycated hemoglobin",
         "glycated haemoglobin", "glycosylated hemoglobin", sources=(BUNDLE,)),
    _lab("2339-0", "Glucose [Mass/volume] in Blood", "glucose", "blood glucose", "blood sugar",
         sources=("us-core", BUNDLE)),
    _lab("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "serum glucose",
         "plasma glucose", sources=("livd",)),
    _lab("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "total cholesterol",
         "cholesterol", "cholesterol total", sources=(R4, BUNDLE)),
    # Plain "LDL" says nothing of the method, and LOINC has a code for exactly that (2089-1);
    # the direct and calculated codes are for terms that name the method.
    _lab("2089-1", "Cholesterol in LDL [Mass/volume] in Serum or Plasma", "ldl",
         "ldl cholesterol", "ldl-c", "low density lipoprotein cholesterol",
         "ldl-cholesterol", sources=(CONSENSUS,)),
    _lab("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
         "direct ldl", "ldl direct", "direct ldl cholesterol",
         "direct low density lipoprotein cholesterol", sources=("fhir-ldl-vs", BUNDLE)),
    _lab("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
         "calculated ldl", "ldl calculated", "ldl (calculated)", "ldl calc",
         sources=(R4,)),
    _lab("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "hdl",
         "hdl cholesterol", "hdl-c", "hdl-cholesterol", "high density lipoprotein cholesterol",
         sources=(R4, BUNDLE)),
    _lab("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "triglycerides",
         "triglyceride", "tg", "trig", sources=(BUNDLE, CONSENSUS)),
    _lab("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "creatinine",
         "serum creatinine", "creat", sources=(IPS,)),
    # The code of the MDRD formula, as Synthea uses for any eGFR.
    _lab("33914-3",
         "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma "
         "by Creatinine-based formula (MDRD)",
         "egfr", "estimated glomerular filtration rate", "egfr (mdrd)", "mdrd egfr",
         sources=(R4, BUNDLE)),
    _lab("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "bun",
         "blood urea nitrogen", "urea nitrogen", sources=(CONSENSUS,)),
    _lab("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "sodium", "serum sodium",
         sources=(R4,)),
    _lab("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "potassium",
         "serum potassium", sources=(R4,)),
    _lab("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "chloride", "serum chloride",
         sources=(R4,)),
    _lab("718-7", "Hemoglobin [Mass/volume] in Blood", "hemoglobin", "haemoglobin", "hb",
         "hgb", sources=(R4, BUNDLE)),
    _lab("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "hematocrit",
         "haematocrit", "hct", sources=(R4, BUNDLE)),
    _lab("789-8", "Erythrocytes [#/volume] in Blood by Automated count", "rbc",
         "red blood cell count", "red blood cells", "red cell count", "erythrocytes",
         sources=(R4, BUNDLE)),
    _lab("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "wbc",
         "white blood cell count", "white blood cells", "white cell count", "wcc",
         "leukocytes", "leucocytes", sources=(R4, BUNDLE)),
    _lab("777-3", "Platelets [#/volume] in Blood by Automated count", "platelets",
         "platelet count", "plt", sources=(R4, BUNDLE)),
    _lab("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
         "alt", "alanine aminotransferase", "sgpt", sources=(R4,)),
    _lab("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
         "ast", "aspartate aminotransferase", "sgot", sources=(R4,)),
    _lab("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma",
         "alkaline phosphatase", "alp", "alk phos", sources=(R4,)),
    _lab("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "albumin", "serum albumin",
         sources=(R4,)),
    _lab("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "tsh",
         "thyroid stimulating hormone", "thyrotropin", sources=(CONSENSUS,)),
    _lab("3024-7", "Thyroxine (T4) free [Mass/volume] in Serum or Plasma", "free t4", "ft4",
         "free thyroxine", sources=(R4,)),
    _lab("1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "crp",
         "c-reactive protein", "c reactive protein", sources=(CONSENSUS,)),
)  # fmt: skip

BUILTIN_TABLE: tuple[TableEntry, ...] = CONDITIONS + OBSERVATIONS


def build_index(table: Iterable[TableEntry]) -> dict[str, TableEntry]:
    """Every normalised name -> its entry. A name claimed by two entries is refused: which of
    the two a CSV meant cannot be known, and guessing would code a record wrongly."""
    index: dict[str, TableEntry] = {}
    clashes: list[str] = []
    for entry in table:
        for name in dict.fromkeys(normalise_term(name) for name in entry.names):
            if name in index and index[name] is not entry:
                clashes.append(name)
            index[name] = entry
    if clashes:
        raise ValueError(f"terminology names claimed twice: {', '.join(sorted(set(clashes)))}")
    return index


_BUILTIN_INDEX = build_index(BUILTIN_TABLE)
_BY_CODING = {
    (coding.system, coding.code): entry for entry in BUILTIN_TABLE for coding in entry.codings
}


def builtin_entry(kind: Kind, term: str) -> TableEntry | None:
    entry = _BUILTIN_INDEX.get(normalise_term(term))
    return entry if entry is not None and entry.kind == kind else None


class BuiltinTerminology:
    """The table above: no network, no failure. Names are matched after `normalise_term`."""

    def __init__(self, table: Sequence[TableEntry] | None = None) -> None:
        self._index = _BUILTIN_INDEX if table is None else build_index(table)

    async def condition(self, term: str) -> Concept:
        return self._find("condition", term)

    async def observation(self, term: str) -> Concept:
        return self._find("observation", term)

    async def aclose(self) -> None:
        return None

    def _find(self, kind: Kind, term: str) -> Concept:
        text = term.strip()
        entry = self._index.get(normalise_term(term))
        if entry is None or entry.kind != kind:
            return Concept(text)
        return entry.concept(text)


# --- the terminology server ------------------------------------------------------------------

# $translate equivalences (R4 ConceptMapEquivalence) taken as a code for the term: the same
# meaning, or a wider one (true of the patient, only less precise). Narrower ones
# (`narrower`, `specializes`) would claim more than the CSV said; `relatedto` and `inexact`
# are too vague to code a record with; `unmatched` and `disjoint` say there is no code.
# Lower rank wins when a server offers several.
_EQUIVALENCE_RANK = {"equal": 0, "equivalent": 0, "wider": 1, "subsumes": 1}
# The same rule for servers that answer in R5 terms (`relationship`).
_RELATIONSHIP_RANK = {"equivalent": 0, "source-is-narrower-than-target": 1}
_MAX_RETRIES = 2
_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class _Answer:
    codings: tuple[Coding, ...]
    category: str | None
    components: tuple[Concept, ...]


@dataclass(frozen=True, slots=True)
class _Lookup:
    display: str | None
    laboratory: bool  # LOINC's CLASSTYPE 1: a laboratory class


class _BoundedCache(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class TerminologyServer:
    """Ask a FHIR R4 terminology server: `ConceptMap/$translate` from `source_system` (the term,
    normalised, is the code) to SNOMED CT, and for observations also to LOINC; then
    `CodeSystem/$lookup` for each code's official display.

    Answers, "no code" included, are cached per instance (CACHE_SIZE terms); failures are not.
    A 404 or `result=false` means "no code"; a server that cannot be reached, is too slow or
    fails (5xx, 429) after two retries raises TerminologyUnavailable.
    An observation's category comes from the built-in table when it knows the term or one of
    the codes (so "vital-signs" stays right); otherwise it is "laboratory" when LOINC's
    $lookup says the code is of a laboratory class (CLASSTYPE 1), and None when nothing says.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        source_system: str = LOCAL_TERMS_SYSTEM,
        fhir: FHIRClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.source_system = source_system
        self._owns_client = fhir is None
        self._fhir = fhir or FHIRClient(
            self.base_url, timeout_s=timeout_s, max_retries=_MAX_RETRIES, backoff_s=_BACKOFF_S
        )
        self._answers: _BoundedCache[tuple[Kind, str], _Answer] = _BoundedCache(CACHE_SIZE)
        self._lookups: _BoundedCache[tuple[str, str], _Lookup] = _BoundedCache(CACHE_SIZE)

    async def condition(self, term: str) -> Concept:
        return await self._concept("condition", term, (SNOMED,))

    async def observation(self, term: str) -> Concept:
        return await self._concept("observation", term, (LOINC, SNOMED))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._fhir.aclose()

    async def _concept(self, kind: Kind, term: str, targets: tuple[str, ...]) -> Concept:
        text = term.strip()
        key = normalise_term(term)
        if not key:
            return Concept(text)
        answer = self._answers.get((kind, key))
        if answer is None:
            answer = await self._ask(kind, key, targets)
            self._answers.put((kind, key), answer)
        return Concept(text, answer.codings, answer.category, answer.components)

    async def _ask(self, kind: Kind, key: str, targets: tuple[str, ...]) -> _Answer:
        codings: list[Coding] = []
        laboratory = False
        for system in targets:
            found = await self._translate(key, system)
            if found is None:
                continue
            looked = await self._lookup(found.system, found.code)
            codings.append(Coding(found.system, found.code, looked.display or found.display))
            laboratory = laboratory or (system == LOINC and looked.laboratory)
        if kind == "condition" or not codings:
            return _Answer(tuple(codings), None, ())
        known = builtin_entry("observation", key) or next(
            (_BY_CODING[c.system, c.code] for c in codings if (c.system, c.code) in _BY_CODING),
            None,
        )
        if known is not None:
            parts = tuple(part.concept(part.names[0]) for part in known.components)
            return _Answer(tuple(codings), known.category, parts)
        return _Answer(tuple(codings), "laboratory" if laboratory else None, ())

    async def _translate(self, key: str, target_system: str) -> Coding | None:
        params = {"system": self.source_system, "code": key, "targetsystem": target_system}
        body = await self._get("ConceptMap/$translate", params)
        if body is None or _parameter(body, "result", "valueBoolean") is not True:
            return None
        best: tuple[int, Coding] | None = None
        for match in _parameters(body, "match"):
            coding = _part(match, "concept", "valueCoding")
            rank = _match_rank(match)
            if not isinstance(coding, dict) or rank is None:
                continue
            system, code = coding.get("system"), coding.get("code")
            if system != target_system or not isinstance(code, str) or not code:
                continue  # a server that ignores `targetsystem` may offer other systems
            display = coding.get("display")
            candidate = Coding(system, code, display if isinstance(display, str) else "")
            if best is None or rank < best[0]:
                best = (rank, candidate)
        return best[1] if best else None

    async def _lookup(self, system: str, code: str) -> _Lookup:
        cached = self._lookups.get((system, code))
        if cached is not None:
            return cached
        # An unknown code is no reason to drop what $translate gave: keep its display.
        body = await self._get(
            "CodeSystem/$lookup", {"system": system, "code": code}, absent=(400, 404, 422)
        )
        looked = _Lookup(None, False)
        if body is not None:
            display = _parameter(body, "display", "valueString")
            looked = _Lookup(
                display if isinstance(display, str) and display else None,
                system == LOINC and _is_laboratory_class(body),
            )
        self._lookups.put((system, code), looked)
        return looked

    async def _get(
        self, operation: str, params: dict[str, str], *, absent: tuple[int, ...] = (404,)
    ) -> dict[str, Any] | None:
        """The Parameters the server answered, or None when it said there is nothing.

        The kernel's FHIR client does the HTTP: timeouts, and retries of these reads on
        connection errors, 429, 502, 503 and 504."""
        try:
            response = await self._fhir.send("GET", operation, params=params)
        except FHIRTimeout as exc:
            raise self._unavailable("the terminology server did not answer in time") from exc
        except FHIRUnavailable as exc:
            raise self._unavailable("the terminology server cannot be reached") from exc
        status = response.status_code
        if status in absent:
            return None
        if status >= 500 or status == 429:
            raise self._unavailable(f"the terminology server failed (HTTP {status})")
        if status >= 400:
            raise self._unavailable(f"the terminology server refused the request (HTTP {status})")
        return self._parameters_of(response)

    def _parameters_of(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise self._unavailable("the terminology server did not answer in JSON") from None
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise self._unavailable("the terminology server did not answer with Parameters")
        return body

    def _unavailable(self, reason: str) -> TerminologyUnavailable:
        log.warning("terminology_server_unavailable", reason=reason)
        return TerminologyUnavailable(reason)


def _parameters(body: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    found = body.get("parameter") or body.get("part") or []
    if not isinstance(found, list):
        return []
    return [p for p in found if isinstance(p, dict) and p.get("name") == name]


def _parameter(body: Mapping[str, Any], name: str, value_key: str) -> Any:
    for parameter in _parameters(body, name):
        if value_key in parameter:
            return parameter[value_key]
    return None


def _part(parameter: Mapping[str, Any], name: str, value_key: str) -> Any:
    return _parameter(parameter, name, value_key)


def _match_rank(match: Mapping[str, Any]) -> int | None:
    equivalence = _part(match, "equivalence", "valueCode")
    if isinstance(equivalence, str):
        return _EQUIVALENCE_RANK.get(equivalence)
    relationship = _part(match, "relationship", "valueCode")
    if isinstance(relationship, str):
        return _RELATIONSHIP_RANK.get(relationship)
    return None  # a match that does not say how close it is codes nothing


def _is_laboratory_class(body: Mapping[str, Any]) -> bool:
    for prop in _parameters(body, "property"):
        if _part(prop, "code", "valueCode") != "CLASSTYPE":
            continue
        for key in ("valueString", "valueCode", "valueInteger"):
            value = _part(prop, "value", key)
            if value is not None:
                text = str(value).strip().casefold()
                return text == "1" or text.startswith("laboratory")
    return False


def terminology_from_settings(settings: object) -> Terminology:
    """The terminology server when TERMINOLOGY_URL is set, else the built-in table."""
    url = getattr(settings, "terminology_url", None)
    if url:
        timeout_s = float(getattr(settings, "terminology_timeout_s", 10.0))
        return TerminologyServer(url, timeout_s=timeout_s)
    return BuiltinTerminology()
