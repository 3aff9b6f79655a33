"""String, conversion, math and clock functions of FHIRPath."""

import math
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from features.fhir_flatten.engine.viewdef import operators, temporal
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.functions import (
    integer_argument,
    on_input,
    with_arguments,
)
from features.fhir_flatten.engine.viewdef.parser import Quantity
from features.fhir_flatten.engine.viewdef.registry import register_functions


def to_text(value: Any) -> str | None:
    """FHIRPath toString() of one item; None for objects, which have no string form."""
    if value.__class__ is bool:
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if value.__class__ is float:
        return format(operators.to_decimal(value), "f")
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, Quantity):
        return f"{to_text(value.value)} '{value.unit}'"
    return None


def _string_input(items: list, function: str) -> str | None:
    value = operators.singleton(items, f"{function}()")
    return None if value is None else to_text(value)


def _string_argument(value: list, function: str) -> str | None:
    argument = operators.singleton(value, f"{function}()")
    if argument is not None and not isinstance(argument, str):
        raise ViewError(f"{function}() expects a string argument, got {argument!r:.40}")
    return argument


def _string_function(name: str, fn, arguments: int = 0):
    """`fn(text, *string arguments)` on a single-string input; empty in, empty out."""

    def apply(items: list, *args: list) -> list:
        text = _string_input(items, name)
        if text is None:
            return []
        values = [_string_argument(arg, name) for arg in args]
        if any(v is None for v in values):
            return []
        result = fn(text, *values)
        return [] if result is None else [result]

    return (arguments, arguments, with_arguments(apply))


def _join(items: list, separator: list | None = None) -> list:
    glue = "" if separator is None else _string_argument(separator, "join")
    texts = [to_text(item) for item in items]
    if any(text is None for text in texts):
        raise ViewError("join() expects strings")
    return ["" if glue is None else glue.join(texts)]


def _substring(items: list, start: list, length: list | None = None) -> list:
    text = _string_input(items, "substring")
    begin = integer_argument(start, "substring")
    if text is None or begin is None or not 0 <= begin < len(text):
        return []
    if length is None:
        return [text[begin:]]
    count = integer_argument(length, "substring")
    return [text[begin : begin + max(count or 0, 0)]]


def _split(items: list, separator: list) -> list:
    text = _string_input(items, "split")
    glue = _string_argument(separator, "split")
    if text is None or glue is None:
        return []
    return text.split(glue) if glue else list(text)


def _matches(text: str, pattern: str) -> bool:
    try:
        return re.search(pattern, text, re.DOTALL) is not None
    except re.error as exc:
        raise ViewError(f"matches(): invalid regular expression {pattern!r}: {exc}") from None


def _replace_matches(text: str, pattern: str, substitution: str) -> str:
    try:
        return re.sub(pattern, substitution.replace("\\", "\\\\"), text)
    except re.error as exc:
        raise ViewError(
            f"replaceMatches(): invalid regular expression {pattern!r}: {exc}"
        ) from None


# --- conversions ----------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?\d+(\.\d+)?")
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


def _to_integer(value: Any) -> Any:
    if value.__class__ is bool:
        return int(value)
    if value.__class__ is int:
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _to_decimal(value: Any) -> Any:
    if value.__class__ is bool:
        return 1.0 if value else 0.0
    if operators.is_number(value):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return float(value) if len(value) <= 15 else Decimal(value)
    return None


def _to_boolean(value: Any) -> Any:
    if value.__class__ is bool:
        return value
    text = to_text(value)
    if text is None:
        return None
    text = text.lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _conversion(name: str, convert):
    def apply(items: list) -> list:
        value = operators.singleton(items, f"{name}()")
        if value is None:
            return []
        result = convert(value)
        return [] if result is None else [result]

    return (0, 0, on_input(apply))


def _converts(name: str, convert):
    def apply(items: list) -> list:
        value = operators.singleton(items, f"{name}()")
        return [] if value is None else [convert(value) is not None]

    return (0, 0, on_input(apply))


# --- math -----------------------------------------------------------------------------------


def _math(name: str, fn):
    def apply(items: list, *args: list) -> list:
        value = operators.singleton(items, f"{name}()")
        if value is None:
            return []
        if not operators.is_number(value):
            raise ViewError(f"{name}() expects a number, got {value!r:.40}")
        try:
            result = fn(value, *args)
        except (ValueError, ArithmeticError, InvalidOperation):
            return []
        return [] if result is None else [result]

    return apply


def _round(value: Any, precision: list | None = None) -> Any:
    digits = 0 if precision is None else integer_argument(precision, "round") or 0
    rounded = operators.to_decimal(value).quantize(Decimal(1).scaleb(-digits), "ROUND_HALF_UP")
    return rounded if value.__class__ is Decimal else float(rounded)


def _now(items: list) -> list:
    return [temporal.FhirDateTime(datetime.now().astimezone().isoformat(timespec="milliseconds"))]


def _today(items: list) -> list:
    return [temporal.FhirDate(datetime.now().date().isoformat())]


def _time_of_day(items: list) -> list:
    return [temporal.FhirTime(datetime.now().time().isoformat(timespec="milliseconds"))]


TEXT = {
    "join": (0, 1, with_arguments(_join)),
    "substring": (1, 2, with_arguments(_substring)),
    "split": (1, 1, with_arguments(_split)),
    "startsWith": _string_function("startsWith", str.startswith, 1),
    "endsWith": _string_function("endsWith", str.endswith, 1),
    "contains": _string_function("contains", lambda text, part: part in text, 1),
    "indexOf": _string_function("indexOf", str.find, 1),
    "matches": _string_function("matches", _matches, 1),
    "replace": _string_function("replace", str.replace, 2),
    "replaceMatches": _string_function("replaceMatches", _replace_matches, 2),
    "length": _string_function("length", len),
    "upper": _string_function("upper", str.upper),
    "lower": _string_function("lower", str.lower),
    "trim": _string_function("trim", str.strip),
    "toChars": (0, 0, on_input(lambda items: list(_string_input(items, "toChars") or ""))),
    "toString": _conversion("toString", to_text),
    "toInteger": _conversion("toInteger", _to_integer),
    "toDecimal": _conversion("toDecimal", _to_decimal),
    "toBoolean": _conversion("toBoolean", _to_boolean),
    "convertsToString": _converts("convertsToString", to_text),
    "convertsToInteger": _converts("convertsToInteger", _to_integer),
    "convertsToDecimal": _converts("convertsToDecimal", _to_decimal),
    "convertsToBoolean": _converts("convertsToBoolean", _to_boolean),
    "abs": (0, 0, with_arguments(_math("abs", abs))),
    "ceiling": (0, 0, with_arguments(_math("ceiling", math.ceil))),
    "floor": (0, 0, with_arguments(_math("floor", math.floor))),
    "truncate": (0, 0, with_arguments(_math("truncate", math.trunc))),
    "round": (0, 1, with_arguments(_math("round", _round))),
    "sqrt": (0, 0, with_arguments(_math("sqrt", math.sqrt))),
    "now": (0, 0, on_input(_now)),
    "today": (0, 0, on_input(_today)),
    "timeOfDay": (0, 0, on_input(_time_of_day)),
}

register_functions(TEXT)
