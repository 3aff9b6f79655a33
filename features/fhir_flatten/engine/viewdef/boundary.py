"""`lowBoundary()` and `highBoundary()`: the range a value of limited precision stands for.

`1.0` means anything in [0.95, 1.05); `1970-06` any day of June 1970; `2010-10-10` as a dateTime
any instant of that day in any time zone (from +14:00 to -12:00), as the FHIRPath spec says.
"""

import calendar
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from features.fhir_flatten.engine.viewdef import temporal
from features.fhir_flatten.engine.viewdef.operators import is_number, to_decimal
from features.fhir_flatten.engine.viewdef.parser import Quantity

_DECIMAL_PRECISION = 8
_DATE_PRECISIONS = {4: 1, 6: 2, 8: 3}
_DATE_TIME_PRECISIONS = {4: 1, 6: 2, 8: 3, 10: 4, 12: 5, 14: 6, 17: 7}
_TIME_PRECISIONS = {2: 1, 4: 2, 6: 3, 9: 4}
_EARLIEST_ZONE = "+14:00"
_LATEST_ZONE = "-12:00"


def decimal_boundary(value: Any, precision: int | None, high: bool) -> Any:
    number = to_decimal(value)
    digits = max(0, -number.as_tuple().exponent) if value.__class__ is not int else 0
    half = Decimal(5).scaleb(-(digits + 1))
    bound = number + half if high else number - half
    if precision is None:
        precision = max(_DECIMAL_PRECISION, digits + 1)
    if not 0 <= precision <= 28:
        return None
    bound = bound.quantize(Decimal(1).scaleb(-precision), ROUND_CEILING if high else ROUND_FLOOR)
    return bound if value.__class__ is Decimal else float(bound)


def _fraction(parsed: temporal.Parsed, high: bool) -> str:
    fraction = parsed.fraction or ""
    if len(parsed.parts) < (3 if parsed.is_time else 6):
        fraction = ""  # no seconds given: the whole second range
    return fraction.ljust(3, "9" if high else "0")


def _filled_date(parts: list, high: bool) -> list[int]:
    year = parts[0]
    month = parts[1] if len(parts) > 1 else (12 if high else 1)
    last_day = calendar.monthrange(year, month)[1]
    day = parts[2] if len(parts) > 2 else (last_day if high else 1)
    return [year, month, day]


def _filled_clock(parts: list, high: bool) -> list[int]:
    filler = [23, 59, 59] if high else [0, 0, 0]
    clock = [int(p) for p in parts] + filler[len(parts) :]
    return clock


def date_time_boundary(value: str, kind: type, precision: int | None, high: bool) -> Any:
    parsed = temporal.parse(value, kind)
    if parsed is None:
        return None
    if kind is temporal.FhirTime:
        levels = _TIME_PRECISIONS.get(9 if precision is None else precision)
        if levels is None:
            return None
        hour, minute, second = _filled_clock(parsed.parts, high)
        text = ":".join(f"{n:02d}" for n in (hour, minute, second)[: min(levels, 3)])
        if levels == 4:
            text += "." + _fraction(parsed, high)
        return temporal.FhirTime(text)
    table = _DATE_PRECISIONS if kind is temporal.FhirDate else _DATE_TIME_PRECISIONS
    default = 8 if kind is temporal.FhirDate else 17
    levels = table.get(default if precision is None else precision)
    if levels is None:
        return None
    year, month, day = _filled_date(parsed.parts[:3], high)
    text = "-".join([f"{year:04d}", f"{month:02d}", f"{day:02d}"][: min(levels, 3)])
    if levels <= 3:
        return kind(text)
    hour, minute, second = _filled_clock(parsed.parts[3:6], high)
    text += "T" + ":".join(f"{n:02d}" for n in (hour, minute, second)[: levels - 3])
    if levels == 7:
        text += "." + _fraction(parsed, high)
    zone = parsed.tz or (_LATEST_ZONE if high else _EARLIEST_ZONE)
    return temporal.FhirDateTime(text + zone)


def boundary(value: Any, precision: int | None, high: bool) -> Any:
    """The low or high boundary of one value; None when it has none (or a bad precision)."""
    if is_number(value):
        return decimal_boundary(value, precision, high)
    if isinstance(value, str):
        kind = value.__class__
        if kind not in temporal.TYPED:
            kind = temporal.typed(value).__class__
            if kind is str:
                return None
        return date_time_boundary(value, kind, precision, high)
    if isinstance(value, Quantity):
        bound = boundary(value.value, precision, high)
        return None if bound is None else Quantity(bound, value.unit)
    if isinstance(value, dict) and is_number(value.get("value")):
        bound = decimal_boundary(value["value"], precision, high)
        return None if bound is None else {**value, "value": bound}
    return None
