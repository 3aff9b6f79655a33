"""The functions that build rows: a select's columns on one focus, the cross product with its
nested selects and unionAll, and the forEach, forEachOrNull and repeat iterations.

Each is `(focus, env) -> list of tuples`, values in column order.
"""

from collections.abc import Callable
from typing import Any

from features.fhir_flatten.engine.viewdef.compiler import Env, Evaluator
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.operators import describe
from features.fhir_flatten.engine.viewdef.parser import Quantity

RowsFn = Callable[[list, Env], list]
_PLAIN = frozenset({str, int, float, bool, dict})


def _plain(value: Any) -> Any:
    """Values the engine made (typed dates, quantities) as JSON-like Python values."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Quantity):
        return {"value": value.value, "unit": value.unit}
    return value


def _failed(exc: ViewError, location: str, source: str) -> ViewError:
    if exc.location:
        return exc
    return ViewError(f"{exc.message} (evaluating {source!r})", location)


def column_reader(
    evaluate: Evaluator, name: str, collection: bool, location: str, source: str
) -> Callable[[list, Env], Any]:
    if collection:

        def read_all(focus: list, env: Env) -> list:
            try:
                values = evaluate(focus, focus, env)
            except ViewError as exc:
                raise _failed(exc, location, source) from None
            return [v if v.__class__ in _PLAIN else _plain(v) for v in values]

        return read_all

    def read_one(focus: list, env: Env) -> Any:
        try:
            values = evaluate(focus, focus, env)
        except ViewError as exc:
            raise _failed(exc, location, source) from None
        if not values:
            return None
        if len(values) == 1:
            value = values[0]
            return value if value.__class__ in _PLAIN else _plain(value)
        raise ViewError(
            f"column '{name}' ({source!r}) gave {len(values)} values for one row; "
            "declare it collection: true, or narrow the path (first(), where(...), forEach)",
            location,
        )

    return read_one


def where_test(evaluate: Evaluator, location: str, source: str) -> Callable[[list, Env], bool]:
    def passes(focus: list, env: Env) -> bool:
        try:
            result = evaluate(focus, focus, env)
        except ViewError as exc:
            raise _failed(exc, location, source) from None
        if not result:
            return False
        if len(result) == 1 and result[0].__class__ is bool:
            return result[0]
        raise ViewError(f"where path {source!r} gave {describe(result)}, not a boolean", location)

    return passes


def combine(columns: list, nested: list[RowsFn], branches: list[RowsFn]) -> RowsFn:
    """One select's rows on one focus: its columns x each nested select x its unionAll."""
    readers = tuple(columns)
    if not readers and len(nested) == 1 and not branches:
        return nested[0]
    if not nested and not branches:
        return lambda focus, env: [tuple([read(focus, env) for read in readers])]

    def rows(focus: list, env: Env) -> list:
        result = [tuple([read(focus, env) for read in readers])]
        for part in nested:
            more = part(focus, env)
            if not more:
                return []
            result = [a + b for a in result for b in more]
        if branches:
            more = []
            for branch in branches:
                more.extend(branch(focus, env))
            if not more:
                return []
            result = [a + b for a in result for b in more]
        return result

    return rows


def for_each(
    path: Evaluator, body: RowsFn, or_null: bool, width: int, location: str, source: str
) -> RowsFn:
    null_row = (None,) * width

    def rows(focus: list, env: Env) -> list:
        try:
            items = path(focus, focus, env)
        except ViewError as exc:
            raise _failed(exc, location, source) from None
        saved = env.row_index
        if not items:
            if not or_null:
                return []
            # forEachOrNull on nothing: the select evaluated on an empty focus (its paths give
            # null, %rowIndex gives 0, as the suite expects), and at least the all-null row.
            env.row_index = 0
            out = body([], env) or [null_row]
            env.row_index = saved
            return out
        out: list = []
        for index, item in enumerate(items):
            env.row_index = index
            out.extend(body([item], env))
        env.row_index = saved
        return out

    return rows


def repeat(paths: list[Evaluator], body: RowsFn) -> RowsFn:
    def children(items: list, env: Env) -> list:
        out: list = []
        for path in paths:
            out.extend(path(items, items, env))
        return out

    def rows(focus: list, env: Env) -> list:
        # Depth first, parents before children, without recursion: deep data cannot
        # exhaust the stack, and %rowIndex numbers the nodes in that order. A node met again
        # (a path such as `$this` that gives its own input) is not walked twice, so the
        # walk always ends.
        pending = children(focus, env)[::-1]
        seen: dict[int, Any] = {}  # id -> node, holding the node so its id stays unique
        saved = env.row_index
        out: list = []
        index = 0
        while pending:
            item = pending.pop()
            if id(item) in seen:
                continue
            seen[id(item)] = item
            env.row_index = index
            index += 1
            out.extend(body([item], env))
            pending.extend(children([item], env)[::-1])
        env.row_index = saved
        return out

    return rows
