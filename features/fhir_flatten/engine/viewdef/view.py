"""ViewDefinition -> CompiledView: validated once, its FHIRPath compiled once, then run per
resource.

A select is compiled into a function `(focus, env) -> rows` (rows are tuples in column order):
its own columns, then its nested selects, then its unionAll branches, combined as a cross
product; forEach, forEachOrNull and repeat run that for each item they give.
"""

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from features.fhir_flatten.engine.viewdef.compiler import Compiler, Env, Evaluator
from features.fhir_flatten.engine.viewdef.constants import parse_constants
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.parser import Node, parse
from features.fhir_flatten.engine.viewdef.rows import (
    RowsFn,
    column_reader,
    combine,
    for_each,
    repeat,
    where_test,
)
from features.fhir_flatten.engine.viewdef.shape import NAME, as_list, as_object

RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
MAX_SELECT_DEPTH = 64

_SELECT_KEYS = {"column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"}
_COLUMN_KEYS = {"name", "path", "type", "collection", "description", "tag"}
_ITERATIONS = ("forEach", "forEachOrNull", "repeat")


@dataclass(frozen=True)
class Column:
    name: str
    type: str | None  # the FHIR type code written in the view ("string", "dateTime"...)
    collection: bool
    description: str | None


class CompiledView:
    """A validated view, ready to turn resources into rows."""

    __slots__ = ("_names", "_rows", "_where", "columns", "name", "resource")

    def __init__(
        self,
        name: str | None,
        resource: str,
        columns: tuple[Column, ...],
        body: RowsFn,
        where: list[Callable[[list, Env], bool]],
    ) -> None:
        self.name = name
        self.resource = resource
        self.columns = columns
        self._names = tuple(column.name for column in columns)
        self._rows = body
        self._where = where

    def rows(self, resource: dict) -> list[tuple]:
        """The rows of one resource, values in column order; [] for other resource types."""
        if resource.__class__ is not dict or resource.get("resourceType") != self.resource:
            return []
        env = Env(resource)
        focus = [resource]
        try:
            for passes in self._where:
                if not passes(focus, env):
                    return []
            return self._rows(focus, env)
        except RecursionError:  # MAX_DEPTH keeps this away unless the caller's stack is deep
            raise ViewError("an expression of the view is nested too deeply to run here") from None

    def run(self, resources: Iterable[dict]) -> Iterator[dict]:
        """Rows as {column: value} for every resource of the view's type."""
        names = self._names
        for resource in resources:
            for row in self.rows(resource):
                yield dict(zip(names, row, strict=True))

    def __repr__(self) -> str:
        return f"CompiledView({self.name!r}, {self.resource}, {len(self.columns)} columns)"


def compile_view(view: dict) -> CompiledView:
    """Validate a ViewDefinition completely and compile it; ViewError says what and where."""
    if not isinstance(view, dict):
        raise ViewError("a view must be a JSON object")
    if view.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise ViewError("resourceType must be 'ViewDefinition'", "resourceType")
    resource = view.get("resource")
    if resource is None:
        raise ViewError("the view must name the resource type it flattens", "resource")
    if not isinstance(resource, str) or not RESOURCE_TYPE.fullmatch(resource):
        raise ViewError(f"{resource!r:.60} is not a FHIR resource type", "resource")
    name = view.get("name")
    if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name)):
        raise ViewError(
            f"{name!r:.60} is not a valid view name (letters, digits, _; a letter first)", "name"
        )
    for key in sorted(_SELECT_KEYS - {"select"}):
        if key in view:
            raise ViewError(f"'{key}' belongs inside a select, not at the top of the view", key)
    builder = _Builder(Compiler(parse_constants(view.get("constant"))))
    selects = as_list(view.get("select"), "select", required=True)
    children = [builder.select(s, f"select[{i}]", 1) for i, s in enumerate(selects)]
    located = [column for child in children for column in child.columns]
    _check_unique(located)
    where = [
        builder.where(w, f"where[{i}]") for i, w in enumerate(as_list(view.get("where"), "where"))
    ]
    body = combine([], [child.rows for child in children], [])
    return CompiledView(name, resource, tuple(c for c, _ in located), body, where)


# --- validation helpers ---------------------------------------------------------------------


def _check_unique(located: list[tuple[Column, str]]) -> None:
    seen: dict[str, str] = {}
    for column, location in located:
        if column.name in seen:
            raise ViewError(
                f"column name '{column.name}' is already used at {seen[column.name]}; "
                "column names must be unique in a view",
                location + ".name",
            )
        seen[column.name] = location


# --- compiling selects ----------------------------------------------------------------------


@dataclass
class _Select:
    columns: list[tuple[Column, str]]  # each column with its location in the view
    rows: RowsFn


class _Builder:
    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler

    def path(self, source: Any, location: str) -> tuple[Evaluator, Node]:
        if not isinstance(source, str):
            raise ViewError(
                f"must be a FHIRPath expression (a string), not {type(source).__name__}", location
            )
        try:
            node = parse(source)
            return self.compiler.compile(node), node
        except ViewError as exc:
            raise exc.at(location) from None
        except RecursionError:  # only when the caller already used most of the stack
            raise ViewError("expression too deeply nested to compile here", location) from None

    def select(self, select: Any, location: str, depth: int) -> _Select:
        if depth > MAX_SELECT_DEPTH:
            raise ViewError(f"selects nested more than {MAX_SELECT_DEPTH} levels deep", location)
        as_object(select, location, _SELECT_KEYS, "a select")
        iterations = [key for key in _ITERATIONS if key in select]
        if len(iterations) > 1:
            raise ViewError(
                f"a select takes one of forEach, forEachOrNull or repeat, not {iterations}",
                location,
            )
        columns = [
            self.column(c, f"{location}.column[{j}]")
            for j, c in enumerate(as_list(select.get("column"), f"{location}.column"))
        ]
        nested = [
            self.select(s, f"{location}.select[{j}]", depth + 1)
            for j, s in enumerate(as_list(select.get("select"), f"{location}.select"))
        ]
        branches = []
        if "unionAll" in select:
            branches = self.union(select["unionAll"], f"{location}.unionAll", depth)
        if not (columns or nested or branches):
            raise ViewError("a select needs a column, a select or a unionAll", location)
        located = [(column, f"{location}.column[{j}]") for j, (column, _) in enumerate(columns)]
        for part in nested:
            located.extend(part.columns)
        if branches:
            located.extend(branches[0].columns)
        body = combine(
            [fn for _, fn in columns], [n.rows for n in nested], [b.rows for b in branches]
        )
        if iterations:
            body = self.iteration(select, iterations[0], location, body, len(located))
        return _Select(located, body)

    def union(self, branches: Any, location: str, depth: int) -> list[_Select]:
        compiled = [
            self.select(b, f"{location}[{j}]", depth + 1)
            for j, b in enumerate(as_list(branches, location, required=True))
        ]
        first = [column.name for column, _ in compiled[0].columns]
        for j, branch in enumerate(compiled[1:], start=1):
            names = [column.name for column, _ in branch.columns]
            if names != first:
                raise ViewError(
                    f"columns ({', '.join(names)}) differ from those of unionAll[0] "
                    f"({', '.join(first)}): every branch needs the same names in the same order",
                    f"{location}[{j}]",
                )
        return compiled

    def iteration(self, select: dict, key: str, location: str, body: RowsFn, width: int) -> RowsFn:
        if key == "repeat":
            paths = as_list(select["repeat"], f"{location}.repeat", required=True)
            compiled = [self.path(p, f"{location}.repeat[{k}]")[0] for k, p in enumerate(paths)]
            return repeat(compiled, body)
        source = select[key]
        path, _ = self.path(source, f"{location}.{key}")
        return for_each(path, body, key == "forEachOrNull", width, f"{location}.{key}", source)

    def column(self, column: Any, location: str) -> tuple[Column, Callable[[list, Env], Any]]:
        as_object(column, location, _COLUMN_KEYS, "a column")
        name = column.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ViewError(
                f"{name!r:.60} is not a valid column name (letters, digits and _, starting with "
                "a letter)",
                location + ".name",
            )
        if "path" not in column:
            raise ViewError(f"column '{name}' has no path", location)
        evaluate, _ = self.path(column["path"], location + ".path")
        kind = column.get("type")
        if kind is not None and (not isinstance(kind, str) or not NAME.fullmatch(kind)):
            raise ViewError(f"{kind!r:.60} is not a FHIR type code", location + ".type")
        collection = column.get("collection", False)
        if collection.__class__ is not bool:
            raise ViewError("collection must be true or false", location + ".collection")
        description = column.get("description")
        if description is not None and not isinstance(description, str):
            raise ViewError("description must be a string", location + ".description")
        if "tag" in column:
            as_list(column["tag"], location + ".tag")
        info = Column(name, kind, collection, description)
        return info, column_reader(evaluate, name, collection, location + ".path", column["path"])

    def where(self, where: Any, location: str) -> Callable[[list, Env], bool]:
        as_object(where, location, {"path", "description"}, "a where")
        if "path" not in where:
            raise ViewError("a where needs a path", location)
        evaluate, node = self.path(where["path"], location + ".path")
        if _never_boolean(node):
            raise ViewError(
                f"{where['path']!r} can never be a boolean; a where path must be",
                location + ".path",
            )
        return where_test(evaluate, location + ".path", where["path"])


_NOT_BOOLEAN_OPERATORS = {"+", "-", "*", "/", "div", "mod", "&"}
_NOT_BOOLEAN_FUNCTIONS = {"count", "join", "toString", "length", "upper", "lower", "trim"}
_NOT_BOOLEAN_FUNCTIONS |= {"substring", "getResourceKey", "getReferenceKey", "indexOf"}


def _never_boolean(node: Node) -> bool:
    """Whether an expression's result is certainly not a boolean (checked before any data)."""
    if node.kind == "literal":
        return bool(node.value) and node.value[0].__class__ is not bool
    if node.kind == "binary":
        return node.value in _NOT_BOOLEAN_OPERATORS
    if node.kind == "unary":
        return True
    return node.kind == "call" and node.value in _NOT_BOOLEAN_FUNCTIONS
