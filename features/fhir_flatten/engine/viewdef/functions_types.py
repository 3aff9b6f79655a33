"""`ofType`, `as` and `is`, as functions and operators.

On a choice element (`value.ofType(Quantity)`, `deceased is boolean`) they read the key the
type names (`valueQuantity`, `deceasedBoolean`): exact, and one dictionary lookup. Elsewhere
the type is judged from the JSON value (see `types.predicate`).
"""

from typing import Any

from features.fhir_flatten.engine.viewdef import operators, types
from features.fhir_flatten.engine.viewdef.compiler import Compiler, Env, Evaluator, extend_flat
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.parser import Node
from features.fhir_flatten.engine.viewdef.registry import (
    EVALUATOR,
    ITEMS,
    register_functions,
    register_type_operators,
)


def _choice_reader(compiler: Compiler, member: Node, type_name: str) -> Evaluator:
    """`<base>.name.ofType(T)` as a read of `nameT` (or of `name` when it holds a T)."""
    name = member.value
    key = types.choice_key(name, type_name)
    check = types.predicate(type_name)
    wrap = types.wrapper(type_name)
    base = None if member.base is None else compiler.compile(member.base)

    def read(focus: list, this: list, env: Env) -> list:
        out: list = []
        for item in focus if base is None else base(focus, this, env):
            if item.__class__ is not dict:
                continue
            value = item.get(key)
            if value is not None:
                extend_flat(out, value)
                continue
            value = item.get(name)
            if value is not None:
                for candidate in value if value.__class__ is list else [value]:
                    if candidate is not None and check(candidate):
                        out.append(candidate)
        if wrap is not None:
            return [wrap(v) for v in out]
        return out

    return read


def _is_choice_member(node: Node) -> bool:
    return node.kind == "member" and not (node.base is None and node.value[0].isupper())


def _filter(type_name: str) -> Any:
    check = types.predicate(type_name)
    wrap = types.wrapper(type_name)

    def of_type(items: list) -> list:
        matching = [item for item in items if check(item)]
        return [wrap(v) for v in matching] if wrap is not None else matching

    return of_type


def _of_type(compiler: Compiler, node: Node):
    type_name = compiler.type_argument(node.args[0], node)
    if node.base is not None and _is_choice_member(node.base):
        return _choice_reader(compiler, node.base, type_name), EVALUATOR
    return _filter(type_name), ITEMS


def _is(compiler: Compiler, node: Node):
    type_name = compiler.type_argument(node.args[0], node)
    return type_test(compiler, type_name, node.base)


def type_test(compiler: Compiler, type_name: str, subject: Node | None):
    """`x is T`: true when the single item of x is a T; empty when x is empty."""
    check = types.predicate(type_name)
    if subject is not None and _is_choice_member(subject):
        key = types.choice_key(subject.value, type_name)
        name = subject.value
        base = None if subject.base is None else compiler.compile(subject.base)

        def read(focus: list, this: list, env: Env) -> list:
            items = focus if base is None else base(focus, this, env)
            found: list = []
            for item in items:
                if item.__class__ is not dict:
                    continue
                if key in item:
                    found.append(True)
                elif name in item:
                    found.extend(check(v) for v in _as_list(item[name]))
                elif types.choice_value(item, name) is not None:
                    found.append(False)
            if len(found) > 1:
                raise ViewError(f"'is' expects a single item, got {len(found)}")
            return found

        return read, EVALUATOR

    def test(items: list) -> list:
        value = operators.singleton(items, "'is'")
        return [] if value is None else [check(value)]

    return test, ITEMS


def _as_list(value: Any) -> list:
    return value if value.__class__ is list else [value]


def _is_operator(compiler: Compiler, type_name: str, subject: Node) -> Evaluator:
    """The `is` operator (`value is Quantity`)."""
    return _operator(compiler, subject, *type_test(compiler, type_name, subject))


def _as_operator(compiler: Compiler, type_name: str, subject: Node) -> Evaluator:
    """The `as` operator (`value as Quantity`)."""
    if _is_choice_member(subject):
        return _choice_reader(compiler, subject, type_name)
    return _operator(compiler, subject, _filter(type_name), ITEMS)


def _operator(compiler: Compiler, subject: Node, impl: Any, mode: str) -> Evaluator:
    if mode == EVALUATOR:
        return impl
    base = compiler.compile(subject)
    return lambda focus, this, env: impl(base(focus, this, env))


TYPES = {
    "ofType": (1, 1, _of_type),
    "as": (1, 1, _of_type),
    "is": (1, 1, _is),
}

register_functions(TYPES)
register_type_operators({"is": _is_operator, "as": _as_operator})
