"""FHIRPath syntax trees to Python closures, built once per view and run on every resource.

Every compiled expression is an `Evaluator`: `(focus, this, env) -> list`. `focus` is the input
collection of the expression (the resource, or the current forEach item, as a one-item list),
`this` is what `$this` means (the focus where the expression or a lambda argument started,
also the input of non-lambda function arguments), and `env` carries the resource and
%rowIndex of the row being built.
"""

from collections.abc import Callable
from typing import Any

from features.fhir_flatten.engine.viewdef import operators, types
from features.fhir_flatten.engine.viewdef.errors import FhirPathError, ViewError
from features.fhir_flatten.engine.viewdef.parser import Node, parse
from features.fhir_flatten.engine.viewdef.registry import (
    EVALUATOR,
    FUNCTIONS,
    ITEMS,
    TYPE_OPERATORS,
)


class Env:
    """Per-resource state the expressions can read: %resource and %rowIndex."""

    __slots__ = ("resource", "row_index")

    def __init__(self, resource: dict, row_index: int = 0) -> None:
        self.resource = resource
        self.row_index = row_index


Evaluator = Callable[[list, list, Env], list]

_BUILTIN_CONSTANTS = {
    "ucum": ["http://unitsofmeasure.org"],
    "sct": ["http://snomed.info/sct"],
    "loinc": ["http://loinc.org"],
}
RESERVED_CONSTANTS = frozenset({"resource", "rootResource", "context", "rowIndex"}) | frozenset(
    _BUILTIN_CONSTANTS
)

_BINARY: dict[str, Callable[[list, list], list]] = {
    "=": operators.equal,
    "!=": operators.not_equal,
    "~": operators.equivalent,
    "!~": operators.not_equivalent,
    "<": operators.less,
    "<=": operators.less_equal,
    ">": operators.greater,
    ">=": operators.greater_equal,
    "+": operators.add,
    "-": operators.subtract,
    "*": operators.multiply,
    "/": operators.divide,
    "div": operators.integer_divide,
    "mod": operators.modulo,
    "&": operators.concatenate,
    "|": operators.union,
    "in": operators.member_of,
    "contains": operators.collection_contains,
}


def extend_flat(out: list, value: Any) -> None:
    if value.__class__ is list:
        if None in value:
            out.extend(v for v in value if v is not None)
        else:
            out.extend(value)
    else:
        out.append(value)


def member_access(name: str, base: Evaluator | None) -> Evaluator:
    """`name` on every object of the input; a choice element's value if only `nameType` is set.

    Like every evaluator it may return a list that belongs to the resource (`name` of a single
    object): evaluators never modify a collection they are given or return.
    """
    choice_value = types.choice_value

    def read(focus: list, this: list, env: Env) -> list:
        items = focus if base is None else base(focus, this, env)
        if len(items) == 1:  # the usual case: one object in, its element out, no copying
            item = items[0]
            if item.__class__ is not dict:
                return []
            value = item.get(name)
            if value is None:
                value = choice_value(item, name)
                if value is None:
                    return []
            if value.__class__ is list:
                return value if None not in value else [v for v in value if v is not None]
            return [value]
        out: list = []
        for item in items:
            if item.__class__ is dict:
                value = item.get(name)
                if value is None:
                    value = choice_value(item, name)
                    if value is None:
                        continue
                extend_flat(out, value)
        return out

    return read


def resource_type_filter(name: str) -> Evaluator:
    """`Patient` at the start of a path: the input if it is a Patient, else nothing."""

    def read(focus: list, this: list, env: Env) -> list:
        return [x for x in focus if x.__class__ is dict and x.get("resourceType") == name]

    return read


class Compiler:
    """Compiles the syntax trees of one view; knows the view's constants."""

    def __init__(self, constants: dict[str, list] | None = None) -> None:
        self.constants = constants or {}

    def expression(self, source: str) -> Evaluator:
        return self.compile(parse(source))

    def compile(self, node: Node) -> Evaluator:
        method = getattr(self, "_" + node.kind)
        return method(node)

    def error(self, message: str, node: Node) -> FhirPathError:
        return FhirPathError(f"{message} at position {node.pos}", node.pos)

    # --- terms ------------------------------------------------------------------------------

    def _literal(self, node: Node) -> Evaluator:
        value = node.value
        return lambda focus, this, env: value

    def _this(self, node: Node) -> Evaluator:
        return lambda focus, this, env: this

    def _constant(self, node: Node) -> Evaluator:
        name = node.value
        if name == "rowIndex":
            return lambda focus, this, env: [env.row_index]
        if name in ("resource", "rootResource"):
            return lambda focus, this, env: [env.resource]
        if name == "context":
            return lambda focus, this, env: this
        if name in _BUILTIN_CONSTANTS:
            value = _BUILTIN_CONSTANTS[name]
        elif name in self.constants:
            value = self.constants[name]
        else:
            raise self.error(f"constant %{name} is not defined in the view", node)
        return lambda focus, this, env: value

    def _member(self, node: Node) -> Evaluator:
        if node.base is None and node.value[0].isupper():
            return resource_type_filter(node.value)
        base = None if node.base is None else self.compile(node.base)
        return member_access(node.value, base)

    def _call(self, node: Node) -> Evaluator:
        spec = FUNCTIONS.get(node.value)
        if spec is None:
            raise self.error(f"unknown function '{node.value}'", node)
        low, high, factory = spec
        if not low <= len(node.args) <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise self.error(
                f"function '{node.value}' takes {expected} argument(s), got {len(node.args)}",
                node,
            )
        impl, mode = factory(self, node)
        if mode == EVALUATOR:
            return impl
        base = None if node.base is None else self.compile(node.base)
        if mode == ITEMS:
            if base is None:
                return lambda focus, this, env: impl(focus)
            return lambda focus, this, env: impl(base(focus, this, env))
        if base is None:
            return impl
        return lambda focus, this, env: impl(base(focus, this, env), this, env)

    def _index(self, node: Node) -> Evaluator:
        base = self.compile(node.base)
        index_node = node.args[0]
        if index_node.kind == "literal":
            index = operators.singleton(index_node.value, "an indexer")
            if index.__class__ is not int:
                raise self.error("an index must be an integer", index_node)
            if index < 0:
                return lambda focus, this, env: []
            return lambda focus, this, env: base(focus, this, env)[index : index + 1]
        index_of = self.compile(index_node)

        def read(focus: list, this: list, env: Env) -> list:
            items = base(focus, this, env)
            position = operators.singleton(index_of(this, this, env), "an indexer")
            if position is None:
                return []
            if position.__class__ is not int:
                raise ViewError(f"an index must be an integer, got {position!r:.40}")
            return items[position : position + 1] if position >= 0 else []

        return read

    # --- operators --------------------------------------------------------------------------

    def _unary(self, node: Node) -> Evaluator:
        operand = self.compile(node.args[0])
        apply = operators.negate if node.value == "-" else operators.positive
        if node.args[0].kind == "literal":
            folded = apply(node.args[0].value)
            return lambda focus, this, env: folded
        return lambda focus, this, env: apply(operand(focus, this, env))

    def _binary(self, node: Node) -> Evaluator:
        symbol = node.value
        left = self.compile(node.args[0])
        right = self.compile(node.args[1])
        if symbol in ("and", "or", "xor", "implies"):
            return _LOGIC[symbol](left, right)
        apply = _BINARY[symbol]
        return lambda focus, this, env: apply(left(focus, this, env), right(focus, this, env))

    def _type(self, node: Node) -> Evaluator:
        operator_name, type_name = node.value
        name = types.canonical(type_name)
        if name is None:
            raise self.error(f"unknown type {type_name!r}", node)
        return TYPE_OPERATORS[operator_name](self, name, node.args[0])

    def type_argument(self, node: Node, owner: Node) -> str:
        """The type named by a function argument (`ofType(Quantity)`, `FHIR.string`)."""
        parts = []
        current: Node | None = node
        while current is not None and current.kind == "member":
            parts.append(current.value)
            current = current.base
        if current is not None or not parts:
            raise self.error(f"'{owner.value}' expects a type name", node)
        name = types.canonical(".".join(reversed(parts)))
        if name is None:
            raise self.error(f"unknown type {'.'.join(reversed(parts))!r}", node)
        return name


def _and(left: Evaluator, right: Evaluator) -> Evaluator:
    def evaluate(focus: list, this: list, env: Env) -> list:
        a = operators.truth(left(focus, this, env), "'and'")
        if a is False:
            return [False]
        b = operators.truth(right(focus, this, env), "'and'")
        if b is False:
            return [False]
        return [True] if a and b else []

    return evaluate


def _or(left: Evaluator, right: Evaluator) -> Evaluator:
    def evaluate(focus: list, this: list, env: Env) -> list:
        a = operators.truth(left(focus, this, env), "'or'")
        if a is True:
            return [True]
        b = operators.truth(right(focus, this, env), "'or'")
        if b is True:
            return [True]
        return [False] if a is False and b is False else []

    return evaluate


def _xor(left: Evaluator, right: Evaluator) -> Evaluator:
    def evaluate(focus: list, this: list, env: Env) -> list:
        a = operators.truth(left(focus, this, env), "'xor'")
        b = operators.truth(right(focus, this, env), "'xor'")
        return [] if a is None or b is None else [a != b]

    return evaluate


def _implies(left: Evaluator, right: Evaluator) -> Evaluator:
    def evaluate(focus: list, this: list, env: Env) -> list:
        a = operators.truth(left(focus, this, env), "'implies'")
        if a is False:
            return [True]
        b = operators.truth(right(focus, this, env), "'implies'")
        if a is True:
            return [] if b is None else [b]
        return [True] if b is True else []

    return evaluate


_LOGIC = {"and": _and, "or": _or, "xor": _xor, "implies": _implies}
