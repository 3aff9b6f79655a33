"""Vital signs: a label then a value ("BP 120/80"), or a value with its unit ("80 bpm")."""

import re

from .results import Span, VitalKind, VitalSign
from .text import dedup, scan

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
                                         r"respirations?", "rr", "resp")),
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


def find_vitals(text: str, low: str) -> list[VitalSign]:
    vitals: list[VitalSign] = []

    def add(vital: VitalSign | None) -> None:
        if vital and not any(
            v.kind == vital.kind and v.span.start < vital.span.end and vital.span.start < v.span.end
            for v in vitals
        ):
            vitals.append(vital)

    for kind, pattern in (*_LABELLED_VITALS, ("temperature", _BARE_T)):
        for match in scan(pattern, low):
            add(_vital(text, kind, match.groupdict(), *match.span()))
    for kind, unit_pattern, before_pattern in _UNIT_VITALS:
        for unit in unit_pattern.finditer(low):
            number = before_pattern.search(low, max(0, unit.start() - 30), unit.start())
            if number:
                groups = {**number.groupdict(), **unit.groupdict()}
                add(_vital(text, kind, groups, number.start(), unit.end()))
    vitals.sort(key=lambda v: v.span.start)
    return dedup(vitals, lambda v: (v.kind, v.value, v.value_2, v.unit))
