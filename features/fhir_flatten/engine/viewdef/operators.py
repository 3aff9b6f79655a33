"""FHIRPath operator semantics on collections (Python lists) of JSON values.

Empty operands propagate as the FHIRPath spec says; a comparison or arithmetic operand with
more than one item is an error (ViewError), as is comparing values of unrelated types.
"""

import operator
import re
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Any

from features.fhir_flatten.engine.viewdef import temporal
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.parser import Quantity

_NUMBER_TYPES = (int, float, Decimal)
_PLAIN = (str, int, float)


def is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER_TYPES) and value.__class__ is not bool


def to_decimal(value: Any) -> Decimal:
    if value.__class__ is float:
        return Decimal(repr(value))
    return value if value.__class__ is Decimal else Decimal(value)


def describe(collection: list) -> str:
    """A short account of a value for error messages (never the whole resource)."""
    if len(collection) != 1:
        return f"{len(collection)} items"
    value = collection[0]
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {value!r:.40}"


def singleton(collection: list, what: str) -> Any:
    if len(collection) > 1:
        raise ViewError(f"{what} expects a single item, got {len(collection)}")
    return collection[0] if collection else None


# --- equality -------------------------------------------------------------------------------


def _quantity_parts(value: Any) -> tuple[Any, str] | None:
    if isinstance(value, Quantity):
        return value.value, value.unit
    if isinstance(value, dict) and "value" in value:
        return value["value"], value.get("code") or value.get("unit") or ""
    return None


def item_equal(a: Any, b: Any) -> bool | None:
    """FHIRPath `=` on two items: True, False, or None when precision leaves it open."""
    ta, tb = a.__class__, b.__class__
    if ta is tb and ta in _PLAIN:
        return a == b
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if is_number(a) and is_number(b):
        return to_decimal(a) == to_decimal(b)
    if isinstance(a, str) and isinstance(b, str):
        if ta in temporal.TYPED or tb in temporal.TYPED:
            kind = ta if ta in temporal.TYPED else tb
            left, right = temporal.parse(a, kind), temporal.parse(b, kind)
            if left is None or right is None:
                return False
            result = temporal.compare(left, right)
            return None if result is None else result == 0
        return a == b
    if isinstance(a, Quantity) or isinstance(b, Quantity):
        pa, pb = _quantity_parts(a), _quantity_parts(b)
        if pa is None or pb is None or pa[1] != pb[1]:
            return False
        return item_equal(pa[0], pb[0])
    return a == b


def equal(left: list, right: list) -> list:
    if not left or not right:
        return []
    if len(left) == 1 and len(right) == 1:
        a, b = left[0], right[0]
        if a.__class__ is b.__class__ and a.__class__ in _PLAIN:  # the usual `use = 'official'`
            return [a == b]
    if len(left) != len(right):
        return [False]
    unknown = False
    for a, b in zip(left, right, strict=True):
        result = item_equal(a, b)
        if result is False:
            return [False]
        if result is None:
            unknown = True
    return [] if unknown else [True]


def not_equal(left: list, right: list) -> list:
    result = equal(left, right)
    return [not result[0]] if result else []


_SPACES = re.compile(r"\s+")


def item_equivalent(a: Any, b: Any) -> bool:
    if (
        isinstance(a, str)
        and isinstance(b, str)
        and not (a.__class__ in temporal.TYPED or b.__class__ in temporal.TYPED)
    ):
        return _SPACES.sub(" ", a.strip()).lower() == _SPACES.sub(" ", b.strip()).lower()
    if is_number(a) and is_number(b):
        da, db = to_decimal(a), to_decimal(b)
        places = min(-da.as_tuple().exponent, -db.as_tuple().exponent, 28)
        if places < 0:
            return da == db
        step = Decimal(1).scaleb(-places)
        return da.quantize(step) == db.quantize(step)
    return item_equal(a, b) is True


def equivalent(left: list, right: list) -> list:
    if not left and not right:
        return [True]
    if len(left) != len(right):
        return [False]
    remaining = list(right)
    for a in left:
        for i, b in enumerate(remaining):
            if item_equivalent(a, b):
                del remaining[i]
                break
        else:
            return [False]
    return [True]


def not_equivalent(left: list, right: list) -> list:
    return [not equivalent(left, right)[0]]


# --- ordering -------------------------------------------------------------------------------


def _order(a: Any, b: Any) -> int | None:
    if is_number(a) and is_number(b):
        da, db = to_decimal(a), to_decimal(b)
        return (da > db) - (da < db)
    if isinstance(a, str) and isinstance(b, str):
        left = temporal.parse(a, a.__class__ if a.__class__ in temporal.TYPED else None)
        right = temporal.parse(b, b.__class__ if b.__class__ in temporal.TYPED else None)
        if left is not None and right is not None and left.is_time == right.is_time:
            return temporal.compare(left, right)
        if a.__class__ in temporal.TYPED or b.__class__ in temporal.TYPED:
            return None
        return (a > b) - (a < b)
    pa, pb = _quantity_parts(a), _quantity_parts(b)
    if pa is not None and pb is not None and (isinstance(a, Quantity) or isinstance(b, Quantity)):
        if pa[1] != pb[1]:
            return None
        return _order(pa[0], pb[0])
    raise ViewError(f"cannot compare {describe([a])} with {describe([b])}")


def _comparison(test):
    def compare(left: list, right: list) -> list:
        if not left or not right:
            return []
        if len(left) > 1 or len(right) > 1:
            raise ViewError(
                f"a comparison needs single items, got {describe(left)} and {describe(right)}"
            )
        result = _order(left[0], right[0])
        return [] if result is None else [test(result, 0)]

    return compare


less = _comparison(operator.lt)
less_equal = _comparison(operator.le)
greater = _comparison(operator.gt)
greater_equal = _comparison(operator.ge)


# --- arithmetic -----------------------------------------------------------------------------


def _number_result(value: Decimal, *inputs: Any) -> Any:
    if any(x.__class__ is Decimal for x in inputs):
        return value
    return float(value)


def _arithmetic(symbol: str, on_ints, on_decimals):
    def apply(left: list, right: list) -> list:
        if not left or not right:
            return []
        a = singleton(left, f"'{symbol}'")
        b = singleton(right, f"'{symbol}'")
        if symbol == "+" and isinstance(a, str) and isinstance(b, str):
            return [str(a) + str(b)]
        if not (is_number(a) and is_number(b)):
            raise ViewError(f"cannot compute {describe(left)} {symbol} {describe(right)}")
        try:
            if a.__class__ is int and b.__class__ is int and on_ints is not None:
                result = on_ints(a, b)
                return [] if result is None else [result]
            result = on_decimals(to_decimal(a), to_decimal(b))
        except (DivisionByZero, InvalidOperation, ZeroDivisionError):
            return []
        return [] if result is None else [_number_result(result, a, b)]

    return apply


def _truncated_div(a, b):
    if b == 0:
        return None
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


def _truncated_mod(a, b):
    if b == 0:
        return None
    remainder = abs(a) % abs(b)
    return remainder if a >= 0 else -remainder


def _divide(a: Decimal, b: Decimal) -> Decimal | None:
    return None if b == 0 else a / b


add = _arithmetic("+", operator.add, operator.add)
subtract = _arithmetic("-", operator.sub, operator.sub)
multiply = _arithmetic("*", operator.mul, operator.mul)
divide = _arithmetic("/", None, _divide)
integer_divide = _arithmetic("div", _truncated_div, _truncated_div)
modulo = _arithmetic("mod", _truncated_mod, _truncated_mod)


def concatenate(left: list, right: list) -> list:
    a = singleton(left, "'&'")
    b = singleton(right, "'&'")
    return [("" if a is None else str(a)) + ("" if b is None else str(b))]


def negate(operand: list) -> list:
    value = singleton(operand, "unary '-'")
    if value is None:
        return []
    if is_number(value):
        return [-value]
    if isinstance(value, Quantity):
        return [Quantity(-value.value, value.unit)]
    raise ViewError(f"cannot negate {describe(operand)}")


def positive(operand: list) -> list:
    value = singleton(operand, "unary '+'")
    if value is not None and not is_number(value) and not isinstance(value, Quantity):
        raise ViewError(f"unary '+' needs a number, got {describe(operand)}")
    return operand


# --- logic (three-valued) -------------------------------------------------------------------


def truth(collection: list, what: str) -> bool | None:
    """A collection as a FHIRPath boolean: None when empty, True for a single non-boolean."""
    if not collection:
        return None
    if len(collection) > 1:
        raise ViewError(f"{what} expects a single boolean, got {len(collection)} items")
    value = collection[0]
    return value if value.__class__ is bool else True


# --- collections ----------------------------------------------------------------------------


def contains_item(collection: list, item: Any) -> bool:
    return any(item_equal(item, other) is True for other in collection)


def distinct(collection: list) -> list:
    out: list = []
    for item in collection:
        if not contains_item(out, item):
            out.append(item)
    return out


def union(left: list, right: list) -> list:
    return distinct(left + right)


def member_of(left: list, right: list) -> list:
    if not left:
        return []
    item = singleton(left, "'in'")
    return [contains_item(right, item)]


def collection_contains(left: list, right: list) -> list:
    return member_of(right, left)
