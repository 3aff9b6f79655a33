"""The functions on collections (existence, filtering, subsetting, combining), and the
factories the other function modules build theirs with.

Each entry is `name: (fewest arguments, most arguments, factory)` (see registry.py). A factory
returns `(implementation, mode)`: ITEMS for `impl(input)`, CONTEXT for `impl(input, this, env)`
(input being the collection the function is invoked on), EVALUATOR for a complete evaluator that
reads its input itself (used to fuse `value.ofType(Quantity)` into one dictionary lookup).
"""

from collections.abc import Callable
from typing import Any

from features.fhir_flatten.engine.viewdef import operators
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.registry import (
    CONTEXT,
    ITEMS,
    Factory,
    FunctionSpec,
    Impl,
    register_functions,
)


def on_input(fn: Callable[[list], list]) -> Factory:
    """A function of its input alone (`first()`, `count()`)."""

    def factory(compiler, node) -> tuple[Impl, str]:
        return fn, ITEMS

    return factory


def with_arguments(fn: Callable[..., list]) -> Factory:
    """A function of its input and argument values, the arguments evaluated on `$this`."""

    def factory(compiler, node) -> tuple[Impl, str]:
        arguments = [compiler.compile(arg) for arg in node.args]
        if not arguments:
            return fn, ITEMS
        if all(arg.kind == "literal" for arg in node.args):
            constants = [arg.value for arg in node.args]
            return (lambda items: fn(items, *constants)), ITEMS
        if len(arguments) == 1:
            (first,) = arguments
            return (lambda items, this, env: fn(items, first(this, this, env))), CONTEXT

        def impl(items: list, this: list, env: Any) -> list:
            return fn(items, *[argument(this, this, env) for argument in arguments])

        return impl, CONTEXT

    return factory


def with_lambda(fn: Callable[[list, Callable[[Any], list]], list]) -> Factory:
    """A function whose argument is evaluated once per input item (`where`, `select`)."""

    def factory(compiler, node) -> tuple[Impl, str]:
        if not node.args:
            return (lambda items: fn(items, None)), ITEMS
        criteria = compiler.compile(node.args[0])

        def impl(items: list, this: list, env: Any) -> list:
            def for_item(item: Any) -> list:
                focus = [item]
                return criteria(focus, focus, env)

            return fn(items, for_item)

        return impl, CONTEXT

    return factory


def _is_true(result: list) -> bool:
    return len(result) == 1 and result[0] is True


def integer_argument(value: list, function: str) -> int | None:
    number = operators.singleton(value, f"{function}()")
    if number is not None and number.__class__ is not int:
        raise ViewError(f"{function}() expects an integer, got {number!r:.40}")
    return number


# --- existence ------------------------------------------------------------------------------


def _exists(items: list, criteria) -> list:
    if criteria is None:
        return [bool(items)]
    return [any(_is_true(criteria(item)) for item in items)]


def _all(items: list, criteria) -> list:
    return [all(_is_true(criteria(item)) for item in items)]


def _not(items: list) -> list:
    value = operators.truth(items, "not()")
    return [] if value is None else [not value]


def _booleans(items: list, function: str) -> list:
    for item in items:
        if item.__class__ is not bool:
            raise ViewError(f"{function}() expects booleans, got {item!r:.40}")
    return items


def _all_true(items: list) -> list:
    return [all(_booleans(items, "allTrue"))]


def _any_true(items: list) -> list:
    return [any(_booleans(items, "anyTrue"))]


def _all_false(items: list) -> list:
    return [not any(_booleans(items, "allFalse"))]


def _any_false(items: list) -> list:
    return [not all(_booleans(items, "anyFalse"))]


def _has_value(items: list) -> list:
    return [len(items) == 1 and not isinstance(items[0], dict | list)]


# --- filtering and projection ---------------------------------------------------------------


def _where(items: list, criteria) -> list:
    return [item for item in items if _is_true(criteria(item))]


def _select(items: list, projection) -> list:
    out: list = []
    for item in items:
        out.extend(projection(item))
    return out


def _repeat(items: list, projection) -> list:
    """The projection applied again to what it gave until nothing new comes.

    Without recursion, so deep data cannot exhaust the stack; an item is only added once
    (as the spec says), which also ends `repeat($this)`.
    """
    out: list = []
    pending = list(reversed(items))
    seen: dict[int, Any] = {}  # id -> item, holding the item so its id stays unique
    while pending:
        fresh = []
        for child in projection(pending.pop()):
            if id(child) in seen or (
                not isinstance(child, dict) and operators.contains_item(out, child)
            ):
                continue
            seen[id(child)] = child
            fresh.append(child)
        out.extend(fresh)
        pending.extend(reversed(fresh))
    return out


def _iif(compiler, node) -> tuple[Impl, str]:
    criterion, *results = (compiler.compile(arg) for arg in node.args)

    explicit_input = node.base is not None

    def impl(items: list, this: list, env: Any) -> list:
        if explicit_input and len(items) > 1:
            raise ViewError("iif() expects a single input item")
        if operators.truth(criterion(items, items, env), "iif()") is True:
            return results[0](items, items, env)
        return results[1](items, items, env) if len(results) > 1 else []

    return impl, CONTEXT


# --- subsetting -----------------------------------------------------------------------------


def _single(items: list) -> list:
    if len(items) > 1:
        raise ViewError(f"single() found {len(items)} items")
    return items


def _skip(items: list, count: list) -> list:
    number = integer_argument(count, "skip")
    return items if number is None or number <= 0 else items[number:]


def _take(items: list, count: list) -> list:
    number = integer_argument(count, "take")
    return [] if number is None or number <= 0 else items[:number]


def _intersect(items: list, other: list) -> list:
    return [x for x in operators.distinct(items) if operators.contains_item(other, x)]


def _exclude(items: list, other: list) -> list:
    return [x for x in items if not operators.contains_item(other, x)]


def _subset_of(items: list, other: list) -> list:
    return [all(operators.contains_item(other, x) for x in items)]


def _superset_of(items: list, other: list) -> list:
    return [all(operators.contains_item(items, x) for x in other)]


# --- tree navigation ------------------------------------------------------------------------


def _children(items: list) -> list:
    out: list = []
    for item in items:
        if item.__class__ is dict:
            for key, value in item.items():
                if key != "resourceType" and not key.startswith("_"):
                    out.extend(value if value.__class__ is list else [value])
    return out


def _descendants(items: list) -> list:
    out: list = []
    level = _children(items)
    while level:
        out.extend(level)
        level = _children(level)
    return out


def _trace(compiler, node) -> tuple[Impl, str]:
    return (lambda items: items), ITEMS


CORE: dict[str, FunctionSpec] = {
    "empty": (0, 0, on_input(lambda items: [not items])),
    "exists": (0, 1, with_lambda(_exists)),
    "all": (1, 1, with_lambda(_all)),
    "allTrue": (0, 0, on_input(_all_true)),
    "anyTrue": (0, 0, on_input(_any_true)),
    "allFalse": (0, 0, on_input(_all_false)),
    "anyFalse": (0, 0, on_input(_any_false)),
    "not": (0, 0, on_input(_not)),
    "hasValue": (0, 0, on_input(_has_value)),
    "count": (0, 0, on_input(lambda items: [len(items)])),
    "distinct": (0, 0, on_input(operators.distinct)),
    "isDistinct": (0, 0, on_input(lambda items: [len(operators.distinct(items)) == len(items)])),
    "subsetOf": (1, 1, with_arguments(_subset_of)),
    "supersetOf": (1, 1, with_arguments(_superset_of)),
    "where": (1, 1, with_lambda(_where)),
    "select": (1, 1, with_lambda(_select)),
    "repeat": (1, 1, with_lambda(_repeat)),
    "iif": (2, 3, _iif),
    "first": (0, 0, on_input(lambda items: items[:1])),
    "last": (0, 0, on_input(lambda items: items[-1:])),
    "tail": (0, 0, on_input(lambda items: items[1:])),
    "single": (0, 0, on_input(_single)),
    "skip": (1, 1, with_arguments(_skip)),
    "take": (1, 1, with_arguments(_take)),
    "intersect": (1, 1, with_arguments(_intersect)),
    "exclude": (1, 1, with_arguments(_exclude)),
    "union": (1, 1, with_arguments(operators.union)),
    "combine": (1, 1, with_arguments(lambda items, other: items + other)),
    "children": (0, 0, on_input(_children)),
    "descendants": (0, 0, on_input(_descendants)),
    "trace": (1, 2, _trace),
}

register_functions(CORE)
