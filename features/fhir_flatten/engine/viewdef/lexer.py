"""FHIRPath tokens: one regular expression, positions kept for error messages."""

import re
from typing import NamedTuple

from features.fhir_flatten.engine.viewdef.errors import FhirPathError


class Token(NamedTuple):
    kind: str  # number, string, datetime, time, ident, special, constant, op, eof
    text: str
    pos: int


_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|//[^\n]*|/\*.*?\*/)
    |(?P<time>@T\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)
    |(?P<datetime>@\d{4}(?:-\d{2}(?:-\d{2})?)?
        (?:T(?:\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)
    |(?P<number>\d+(?:\.\d+)?L?)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`)
    |(?P<special>\$[A-Za-z_][A-Za-z0-9_]*)
    |(?P<constant>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
    |(?P<op><=|>=|!=|!~|[=~<>+\-*/&|().,\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n"}
_ESCAPES |= {"r": "\r", "t": "\t"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def unescape(body: str, pos: int) -> str:
    """The text of a quoted string or delimited identifier, escapes resolved."""

    def replace(match: re.Match) -> str:
        code = match.group(1)
        if code[0] == "u" and len(code) == 5:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise FhirPathError(
            f"unknown escape '\\{code}' at position {pos + match.start()}", pos + match.start()
        )

    return _ESCAPE.sub(replace, body)


def _unmatched(source: str, pos: int) -> FhirPathError:
    char = source[pos]
    if char in "'`":
        what = "unterminated string" if char == "'" else "unterminated delimited identifier"
    elif char == "@":
        what = "invalid date/time literal"
    else:
        what = f"unexpected character {char!r}"
    return FhirPathError(f"{what} at position {pos}", pos)


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    end = len(source)
    while pos < end:
        match = _TOKEN.match(source, pos)
        if match is None:
            raise _unmatched(source, pos)
        kind = match.lastgroup
        if kind != "skip":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "", end))
    return tokens
