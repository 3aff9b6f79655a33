"""The table of FHIRPath functions and type operators, filled when the modules that define
them are imported (functions.py, functions_text.py, functions_types.py, functions_fhir.py:
the package imports them all) and read by the compiler.

The compiler and the functions both import this module and not each other: a function's
factory is handed the compiler, which compiles the call's arguments, and the compiler looks the
function up here. So there is no import cycle between them.

Each function is `name: (fewest arguments, most arguments, factory)`. A factory runs once, when
the view is compiled: it gets the compiler and the call's syntax node and returns
`(implementation, mode)`, the mode saying how the compiler calls the implementation.
"""

from collections.abc import Callable
from typing import Any

# The modes.
EVALUATOR = "evaluator"  # a complete evaluator: reads its own input
ITEMS = "items"  # impl(input) -> list
CONTEXT = "context"  # impl(input, this, env) -> list

Impl = Callable[..., list]
Factory = Callable[[Any, Any], tuple[Impl, str]]
FunctionSpec = tuple[int, int, Factory]
# (compiler, canonical type name, the operand's syntax node) -> evaluator
TypeOperator = Callable[[Any, str, Any], Callable[..., list]]

FUNCTIONS: dict[str, FunctionSpec] = {}
TYPE_OPERATORS: dict[str, TypeOperator] = {}  # "is", "as"


def register_functions(table: dict[str, FunctionSpec]) -> None:
    _register(FUNCTIONS, table, "function")


def register_type_operators(table: dict[str, TypeOperator]) -> None:
    _register(TYPE_OPERATORS, table, "type operator")


def _register(registry: dict[str, Any], table: dict[str, Any], kind: str) -> None:
    for name, entry in table.items():
        if name in registry:
            raise RuntimeError(f"FHIRPath {kind} {name!r} is defined twice")
        registry[name] = entry
