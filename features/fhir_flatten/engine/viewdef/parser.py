"""FHIRPath text to a syntax tree: a Pratt parser with a hard limit on nesting.

The limit keeps a hostile or broken expression (10,000 parentheses, `1+1+...+1`) from
exhausting Python's stack in the parser, the compiler or the compiled closures: such an
expression is refused with a ViewError instead.
"""

from decimal import Decimal
from typing import Any

from features.fhir_flatten.engine.viewdef import temporal
from features.fhir_flatten.engine.viewdef.errors import FhirPathError
from features.fhir_flatten.engine.viewdef.lexer import Token, tokenize, unescape

# 128 levels leave room on Python's stack (1000 frames) for the 3 to 5 frames a level costs
# when parsed, compiled and run, plus the caller's own frames.
MAX_DEPTH = 128
MAX_LENGTH = 65_536

# Binding powers, lowest first, after the FHIRPath grammar's operator precedence.
_INFIX = {
    "implies": 10,
    "or": 20,
    "xor": 20,
    "and": 30,
    "in": 40,
    "contains": 40,
    "=": 50,
    "~": 50,
    "!=": 50,
    "!~": 50,
    "<": 60,
    ">": 60,
    "<=": 60,
    ">=": 60,
    "|": 70,
    "is": 80,
    "as": 80,
    "+": 90,
    "-": 90,
    "&": 90,
    "*": 100,
    "/": 100,
    "div": 100,
    "mod": 100,
}
_PREFIX_POWER = 110
_WORD_OPERATORS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}
_CALENDAR_UNITS = {
    "year", "years", "month", "months", "week", "weeks", "day", "days",
    "hour", "hours", "minute", "minutes", "second", "seconds", "millisecond", "milliseconds",
}  # fmt: skip


class Quantity:
    """A FHIRPath quantity literal (`4 'mg'`, `3 days`)."""

    __slots__ = ("unit", "value")

    def __init__(self, value: Any, unit: str) -> None:
        self.value = value
        self.unit = unit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and (self.value, self.unit) == (other.value, other.unit)

    def __hash__(self) -> int:
        return hash((self.value, self.unit))

    def __repr__(self) -> str:
        return f"{self.value} '{self.unit}'"


class Node:
    """One syntax tree node. `depth` is the height of the tree below it, checked on creation."""

    __slots__ = ("args", "base", "depth", "kind", "pos", "value")

    def __init__(
        self, kind: str, pos: int, value: Any = None, base: "Node | None" = None, args=()
    ) -> None:
        self.kind = kind  # literal, this, constant, member, call, index, unary, binary, type
        self.pos = pos
        self.value = value
        self.base = base
        self.args = tuple(args)
        children = (base, *self.args) if base is not None else self.args
        self.depth = 1 + max((child.depth for child in children), default=0)
        if self.depth > MAX_DEPTH:
            raise FhirPathError(
                f"expression nested more than {MAX_DEPTH} levels deep at position {pos}", pos
            )

    def __repr__(self) -> str:
        return f"Node({self.kind}, {self.value!r}, base={self.base!r}, args={self.args!r})"


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.index = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, message: str, token: Token | None = None) -> FhirPathError:
        token = token or self.token
        found = "end of expression" if token.kind == "eof" else repr(token.text)
        return FhirPathError(f"{message}, found {found} at position {token.pos}", token.pos)

    def expect(self, text: str) -> Token:
        if self.token.kind != "op" or self.token.text != text:
            raise self.fail(f"expected {text!r}")
        return self.advance()

    def parse(self) -> Node:
        node = self.expression(0, 0)
        if self.token.kind != "eof":
            raise self.fail("expected an operator or the end of the expression")
        return node

    def expression(self, min_power: int, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FhirPathError(
                f"expression nested more than {MAX_DEPTH} levels deep at position {self.token.pos}",
                self.token.pos,
            )
        left = self.prefix(depth)
        while True:
            token = self.token
            if token.kind == "op" and token.text == ".":
                self.advance()
                left = self.invocation(left, depth)
            elif token.kind == "op" and token.text == "[":
                self.advance()
                index = self.expression(0, depth + 1)
                self.expect("]")
                left = Node("index", token.pos, base=left, args=(index,))
            elif self._is_infix(token) and _INFIX[token.text] > min_power:
                self.advance()
                if token.text in ("is", "as"):
                    left = Node("type", token.pos, (token.text, self.type_name()), args=(left,))
                else:
                    right = self.expression(_INFIX[token.text], depth + 1)
                    left = Node("binary", token.pos, token.text, args=(left, right))
            else:
                return left

    @staticmethod
    def _is_infix(token: Token) -> bool:
        if token.kind == "op":
            return token.text in _INFIX
        return token.kind == "ident" and token.text in _WORD_OPERATORS

    def type_name(self) -> str:
        parts = [self.identifier("a type name")]
        while self.token.kind == "op" and self.token.text == ".":
            self.advance()
            parts.append(self.identifier("a type name"))
        return ".".join(parts)

    def identifier(self, what: str = "an identifier") -> str:
        token = self.token
        if token.kind != "ident":
            raise self.fail(f"expected {what}")
        self.advance()
        if token.text.startswith("`"):
            return unescape(token.text[1:-1], token.pos + 1)
        return token.text

    def invocation(self, base: Node | None, depth: int) -> Node:
        token = self.token
        name = self.identifier("a name or function after '.'" if base else "an identifier")
        if self.token.kind == "op" and self.token.text == "(" and not token.text.startswith("`"):
            self.advance()
            args = []
            if not (self.token.kind == "op" and self.token.text == ")"):
                args.append(self.expression(0, depth + 1))
                while self.token.kind == "op" and self.token.text == ",":
                    self.advance()
                    args.append(self.expression(0, depth + 1))
            self.expect(")")
            return Node("call", token.pos, name, base=base, args=args)
        return Node("member", token.pos, name, base=base)

    def prefix(self, depth: int) -> Node:
        token = self.token
        kind, text = token.kind, token.text
        if kind == "number":
            self.advance()
            return self.number(token)
        if kind == "string":
            self.advance()
            return Node("literal", token.pos, [unescape(text[1:-1], token.pos + 1)])
        if kind == "datetime":
            self.advance()
            body = text[1:].rstrip("T")
            value = temporal.FhirDateTime(body) if "T" in text else temporal.FhirDate(body)
            return Node("literal", token.pos, [value])
        if kind == "time":
            self.advance()
            return Node("literal", token.pos, [temporal.FhirTime(text[2:])])
        if kind == "constant":
            self.advance()
            name = text[1:]
            if name[0] in "`'":
                name = unescape(name[1:-1], token.pos + 2)
            return Node("constant", token.pos, name)
        if kind == "special":
            self.advance()
            if text == "$this":
                return Node("this", token.pos)
            raise FhirPathError(f"{text} is not supported at position {token.pos}", token.pos)
        if kind == "ident":
            if text in ("true", "false"):
                self.advance()
                return Node("literal", token.pos, [text == "true"])
            return self.invocation(None, depth)
        if kind == "op":
            if text == "(":
                self.advance()
                node = self.expression(0, depth + 1)
                self.expect(")")
                return node
            if text == "{":
                self.advance()
                self.expect("}")
                return Node("literal", token.pos, [])
            if text in ("+", "-"):
                self.advance()
                following = self.token
                if text == "-" and following.kind == "number" and following.pos == token.pos + 1:
                    # `-1.587` is a negative literal, so `-1.587.lowBoundary()` is -1.5875 as in
                    # the FHIRPath spec's examples (not -(1.587.lowBoundary())).
                    self.advance()
                    return self.number(following, negative=True)
                operand = self.expression(_PREFIX_POWER, depth + 1)
                return Node("unary", token.pos, text, args=(operand,))
        raise self.fail("expected an expression", token)

    def number(self, token: Token, negative: bool = False) -> Node:
        text = ("-" if negative else "") + token.text
        if text.endswith("L"):
            value: Any = int(text[:-1])
        elif "." in text:
            value = float(text) if len(text) <= 15 else Decimal(text)
        else:
            value = int(text)
        unit = self.token
        if unit.kind == "string":
            self.advance()
            return Node("literal", token.pos, [Quantity(value, unescape(unit.text[1:-1], 0))])
        if unit.kind == "ident" and unit.text in _CALENDAR_UNITS:
            self.advance()
            return Node("literal", token.pos, [Quantity(value, unit.text)])
        return Node("literal", token.pos, [value])


def parse(source: str) -> Node:
    """The syntax tree of `source`; FhirPathError (a ViewError) when it does not parse."""
    if not isinstance(source, str):
        raise FhirPathError(f"an expression must be a string, not {type(source).__name__}", 0)
    if not source.strip():
        raise FhirPathError("empty expression", 0)
    if len(source) > MAX_LENGTH:
        raise FhirPathError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    return _Parser(source).parse()
