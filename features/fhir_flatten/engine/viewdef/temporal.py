"""Dates, dateTimes and times: typed strings, and comparison at the precision they carry.

FHIR JSON gives dates as plain strings, so a value only knows it is a date when the view says
so: a literal (`@2020-01-01`), a typed constant (`valueDate`), `ofType(dateTime)` or a
boundary function. Those values are `str` subclasses, so they print and serialise as the ISO
text they came from.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal


class FhirDate(str):
    __slots__ = ()


class FhirDateTime(str):
    __slots__ = ()


class FhirTime(str):
    __slots__ = ()


TYPED = (FhirDate, FhirDateTime, FhirTime)

_DATE_TIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?"
    r"(?:T(?:(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?"
)
_TIME = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?")


class Parsed:
    """A date/time split into its parts; `parts` stops at the value's precision.

    parts: year, month, day, hour, minute, second (seconds as a Decimal with the fraction).
    """

    __slots__ = ("fraction", "is_time", "parts", "tz")

    def __init__(self, parts: list, tz: str | None, is_time: bool, fraction: str | None) -> None:
        self.parts = parts
        self.tz = tz
        self.is_time = is_time
        self.fraction = fraction

    @property
    def has_time(self) -> bool:
        return self.is_time or len(self.parts) > 3


def parse(value: str, kind: type | None = None) -> Parsed | None:
    """Parse a date, dateTime or time string; None when it is none of them."""
    if kind is FhirTime or (kind is None and len(value) >= 2 and value[2:3] in ("", ":")):
        match = _TIME.fullmatch(value)
        if match is None:
            return None
        hour, minute, second, fraction = match.groups()
        parts = [int(hour)]
        if minute is not None:
            parts.append(int(minute))
        if second is not None:
            parts.append(Decimal(f"{second}.{fraction}") if fraction else Decimal(second))
        return Parsed(parts, None, True, fraction)
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, tz = match.groups()
    if tz is not None and hour is None:
        return None
    parts: list = [int(year)]
    for piece in (month, day, hour, minute):
        if piece is None:
            break
        parts.append(int(piece))
    if second is not None and len(parts) == 5:
        parts.append(Decimal(f"{second}.{fraction}") if fraction else Decimal(second))
    return Parsed(parts, tz, False, fraction)


def _tz_minutes(tz: str) -> int:
    if tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    return sign * (int(tz[1:3]) * 60 + int(tz[4:6]))


def _to_utc(parsed: Parsed) -> list:
    """The parts shifted to UTC (same precision); only for values with a time and a zone."""
    parts = parsed.parts
    filled = parts + [1, 1, 0, 0, Decimal(0)][len(parts) - 1 :]
    seconds = filled[5]
    whole = int(seconds)
    moment = datetime(
        filled[0], filled[1], filled[2], filled[3], filled[4], whole, tzinfo=UTC
    ) - timedelta(minutes=_tz_minutes(parsed.tz or "Z"))
    shifted = [moment.year, moment.month, moment.day, moment.hour, moment.minute]
    shifted.append(Decimal(moment.second) + (seconds - whole))
    return shifted[: len(parts)]


def compare(left: Parsed, right: Parsed) -> int | None:
    """-1, 0 or 1; None when the answer depends on digits one of them does not have."""
    if left.is_time != right.is_time:
        return None
    a, b = left.parts, right.parts
    if left.has_time and right.has_time and left.tz and right.tz and left.tz != right.tz:
        a, b = _to_utc(left), _to_utc(right)
    for x, y in zip(a, b, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(a) == len(b) else None


def typed(value: str) -> str:
    """A plain string as the temporal type its text shows (for values without a declared type)."""
    parsed = parse(value)
    if parsed is None:
        return value
    if parsed.is_time:
        return FhirTime(value)
    return FhirDateTime(value) if parsed.has_time else FhirDate(value)
