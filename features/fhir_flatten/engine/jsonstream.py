"""Walk one top-level JSON object from a byte stream, one member or array item at a time.

The standard `json` module only parses whole documents, and a FHIR Bundle can be far larger
than we want in memory. `iter_object` reads the stream in chunks and yields each top-level
member, except that the items of one chosen array (a Bundle's `entry`) are yielded one by one,
so the memory needed is that of the largest single value, not of the document.

Each value is parsed by `json`'s own C scanner (`raw_decode`), straight from the buffer. When a
value runs past the end of what has been read, a bracket-and-string scan (regular expressions
for the text between brackets, so Python only runs per bracket) reads on until the value is
complete, and it is parsed again: a syntax error is only reported once the value is whole, so
it is never mistaken for the end of a chunk.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 64 * 1024

_DECODER = json.JSONDecoder()
_UTF8_BOM = b"\xef\xbb\xbf"
_OPENERS = "{["
# From outside a string: everything up to the next bracket, complete strings included. It stops
# early at the quote of a string that does not end inside the buffer.
_SKIP_TO_BRACKET = re.compile(r'(?:[^"{}\[\]]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
# From inside a string: up to its closing quote, or to the end of the buffer. It never stops
# between a backslash and the character it escapes unless the buffer ends there.
_STRING_BODY = re.compile(r'(?:[^"\\]++|\\.)*+', re.DOTALL)
_SCALAR = re.compile(r"[^\s,\]}]*+")
_NOT_WHITESPACE = re.compile(r"[^ \t\r\n]")


@dataclass(frozen=True, slots=True)
class Position:
    offset: int  # bytes from the start of the input, from 0
    line: int  # from 1; 0 when not known
    column: int  # from 1, in characters

    def describe(self) -> str:
        if not self.line:  # not known
            return f"byte {self.offset}"
        return f"byte {self.offset} (line {self.line}, column {self.column})"


@dataclass(frozen=True, slots=True)
class Member:
    """A top-level member other than the streamed array."""

    key: str
    value: Any
    position: Position


@dataclass(frozen=True, slots=True)
class Item:
    """One item of the streamed array: its value and its JSON text.

    `too_deep` when it nests beyond what the C parser takes (value is then None).
    """

    index: int
    value: Any
    text: str
    too_deep: bool = False


@dataclass(frozen=True, slots=True)
class End:
    """The object's closing brace has been read; `position` is just after it."""

    position: Position


class JsonStreamError(Exception):
    """The input is not the JSON object expected; `at_end` when it stopped too early."""

    def __init__(self, message: str, position: Position, *, at_end: bool = False) -> None:
        super().__init__(f"{message} at {position.describe()}")
        self.message = message
        self.position = position
        self.at_end = at_end


def iter_object(
    read: Callable[[int], bytes],
    *,
    array_key: str,
    max_value_chars: int,
    alone: bool = True,
) -> Iterator[Member | Item | End]:
    """Yield the members of the JSON object that `read` returns, in input order.

    The items of the top-level array named `array_key` come as `Item`s; a value longer than
    `max_value_chars` is refused. With `alone`, nothing but whitespace may follow the object.
    """
    source = _Source(read, CHUNK_BYTES)
    found = source.peek()
    if found is None:
        raise JsonStreamError("the input is empty", source.position(), at_end=True)
    if found != "{":
        raise JsonStreamError(
            f"expected a JSON object, found {_describe(found)}", source.position()
        )
    source.pos += 1
    keys: set[str] = set()
    found = source.peek()
    while found != "}":
        if found != '"':
            source.fail("expected a member name in double quotes")
        position = source.position()
        key, _, _ = source.value(max_value_chars)
        if key in keys:
            raise JsonStreamError(f"duplicate member {key!r}", position)
        keys.add(key)
        if source.peek() != ":":
            source.fail(f"expected ':' after {key!r}")
        source.pos += 1
        if source.peek() == "[" and key == array_key:
            source.pos += 1
            yield from _iter_array(source, max_value_chars)
        else:
            position = source.position()
            value, _, too_deep = source.value(max_value_chars)
            if too_deep:
                raise JsonStreamError("nested too deeply to read", position)
            yield Member(key, value, position)
        found = source.peek()
        if found == ",":
            source.pos += 1
            found = source.peek()
        elif found != "}":
            source.fail(f"expected ',' or '}}' after the value of {key!r}")
    source.pos += 1
    end = source.position()
    if alone and source.peek() is not None:
        source.fail("unexpected data after the JSON object")
    yield End(end)


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether the objects and arrays of a parsed JSON value nest more than `limit` deep.

    Level by level, without recursion; it visits each object and array once, which costs less
    than scanning the value's text (real FHIR nests about ten levels).
    """
    level = [value] if value.__class__ is dict or value.__class__ is list else []
    for _ in range(limit):
        if not level:
            return False
        below = []
        for node in level:
            for child in node.values() if node.__class__ is dict else node:
                if child.__class__ is dict or child.__class__ is list:
                    below.append(child)
        level = below
    return bool(level)


def read_up_to(read: Callable[[int], bytes], size: int) -> bytes:
    """`size` bytes, fewer only at the end: some streams return a few bytes a read."""
    parts, total = [], 0
    while total < size and (chunk := read(size - total)):
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


def _iter_array(source: _Source, max_value_chars: int) -> Iterator[Item]:
    index = 0
    if source.peek() == "]":
        source.pos += 1
        return
    while True:
        value, text, too_deep = source.value(max_value_chars)
        yield Item(index, value, text, too_deep)
        found = source.peek()
        if found == "]":
            source.pos += 1
            return
        if found != ",":
            source.fail(f"expected ',' or ']' after item {index} of the array")
        source.pos += 1
        index += 1


def _describe(found: str) -> str:
    if found == "[":
        return "an array"
    if found == '"':
        return "a string"
    if found in "-0123456789":
        return "a number"
    if found in "tfn":
        return "true, false or null"
    if found == "<":
        return "'<' (XML is not accepted, only JSON)"
    return "text that is not JSON"


class _Source:
    """The decoded text read so far, from the value being read on, with its place kept."""

    def __init__(self, read: Callable[[int], bytes], chunk_bytes: int) -> None:
        self._read = read
        self._chunk_bytes = chunk_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._at_eof = False
        self.pos = 0
        # Where text[0] is in the input, kept up to date as consumed text is dropped.
        self._base_bytes = 0
        self._base_line = 1
        self._base_column = 1
        self._bytes_decoded = 0  # given to the decoder, which may hold the last few back
        first = read_up_to(read, len(_UTF8_BOM))
        if first.startswith(_UTF8_BOM):
            self._base_bytes = self._bytes_decoded = len(_UTF8_BOM)
            first = first[len(_UTF8_BOM) :]
        self.text = self._decode(first)

    def more(self) -> bool:
        piece = self._next_piece()
        if piece is None:
            return False
        self.text += piece
        return True

    def _next_piece(self) -> str | None:
        """The next chunk's text, or None at the end of the input."""
        if self._at_eof:
            return None
        # Whole chunks even from a stream that returns a few bytes a read: fewer, larger appends.
        chunk = read_up_to(self._read, self._chunk_bytes)
        if not chunk:
            self._at_eof = True
            self._decode(b"", final=True)
            return None
        return self._decode(chunk)

    def _decode(self, chunk: bytes, *, final: bool = False) -> str:
        held_back = len(self._decoder.getstate()[0])
        try:
            return self._decoder.decode(chunk, final)
        except UnicodeDecodeError as error:
            # error.start counts from the first byte held back, if any.
            position = Position(self._bytes_decoded - held_back + error.start, 0, 0)
            message = "the input ends inside a UTF-8 character" if final else "not UTF-8 text"
            raise JsonStreamError(message, position, at_end=final) from None
        finally:
            self._bytes_decoded += len(chunk)

    def peek(self) -> str | None:
        """The next character that is not whitespace (moving to it), or None at the end."""
        while True:
            found = _NOT_WHITESPACE.search(self.text, self.pos)
            if found:
                self.pos = found.start()
                return self.text[self.pos]
            self.pos = len(self.text)
            self._drop_consumed()
            if not self.more():
                return None

    def value(self, max_chars: int) -> tuple[Any, str, bool]:
        """Parse the next value: (value, its text, whether it nests too deeply to parse)."""
        if self.peek() is None:
            self.fail("expected a value")
        self._drop_consumed()
        start = self.pos
        whole_to: int | None = None  # where the value ends, once it is whole in the buffer
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, start)
            except json.JSONDecodeError as error:
                if whole_to is not None or self._at_eof:
                    if error.pos >= len(self.text):
                        raise self._ends_inside(start) from None
                    message = f"not valid JSON: {error.msg}"
                    raise JsonStreamError(message, self.position(error.pos)) from None
            except RecursionError:
                if whole_to is not None:
                    self.pos = whole_to
                    return None, self.text[start:whole_to], True
            else:
                # A number that reaches the end of the buffer may go on in the next chunk.
                if end < len(self.text) or self._at_eof or isinstance(value, dict | list | str):
                    if end - start > max_chars:
                        raise self._too_long(start, max_chars)
                    self.pos = end
                    return value, self.text[start:end], False
            whole_to = self._end_of_value(start, max_chars)

    def _end_of_value(self, start: int, max_chars: int) -> int:
        """Read until the value at `start` is whole in the buffer; where it ends.

        The chunks read are scanned one by one and joined once at the end: appending each to
        the buffer would copy a long value over and over.
        """
        scan = _ValueEnd(self.text[start])
        end = scan.feed(self.text, start + 1 if scan.in_string else start)
        if end is not None:
            return end
        pieces: list[str] = []
        before = len(self.text)  # where the first piece will start
        held = before - start
        while end is None:
            if held > max_chars:
                raise self._too_long(start, max_chars)
            piece = self._next_piece()
            if piece is None:
                self.text += "".join(pieces)
                if scan.scalar:  # a number or a literal ends with the input
                    return len(self.text)
                raise self._ends_inside(start)
            end = scan.feed(piece, 0)
            pieces.append(piece)
            held += len(piece)
        end += before + sum(len(piece) for piece in pieces[:-1])
        self.text += "".join(pieces)
        return end

    def _ends_inside(self, start: int) -> JsonStreamError:
        message = "the input ends inside the value that starts here"
        return JsonStreamError(message, self.position(start), at_end=True)

    def _too_long(self, start: int, max_chars: int) -> JsonStreamError:
        message = f"a single value is longer than {max_chars:,} characters, the most accepted"
        return JsonStreamError(message, self.position(start))

    def fail(self, message: str) -> None:
        if self.pos >= len(self.text):
            raise JsonStreamError(f"the input ends early: {message}", self.position(), at_end=True)
        raise JsonStreamError(message, self.position())

    def position(self, index: int | None = None) -> Position:
        """Where text[index] (default: the current character) is in the input."""
        index = self.pos if index is None else index
        before = self.text[:index]
        offset = self._base_bytes + len(before.encode())
        newlines = before.count("\n")
        if not newlines:
            return Position(offset, self._base_line, self._base_column + index)
        return Position(offset, self._base_line + newlines, index - before.rfind("\n"))

    def _drop_consumed(self) -> None:
        # Only once a whole chunk is behind us: cutting after every small value would copy the
        # rest of the buffer each time.
        if self.pos < self._chunk_bytes:
            return
        start = self.position()
        self._base_bytes, self._base_line, self._base_column = (
            start.offset,
            start.line,
            start.column,
        )
        self.text = self.text[self.pos :]
        self.pos = 0


class _ValueEnd:
    """Finds where one JSON value ends, fed its text a piece at a time.

    Only strings and brackets matter; whether the value is valid JSON is `raw_decode`'s to say.
    """

    def __init__(self, first: str) -> None:
        self.scalar = first != '"' and first not in _OPENERS
        self.in_string = first == '"'
        self._depth = 0
        self._escaped = False  # the previous piece ended on a backslash inside a string

    def feed(self, text: str, index: int) -> int | None:
        """Where the value ends in `text`, read from `index`; None when it goes on."""
        if self.scalar:
            end = _SCALAR.match(text, index).end()
            return end if end < len(text) else None
        if self._escaped:
            if not text:
                return None
            index += 1
            self._escaped = False
        while True:
            if self.in_string:
                index = _STRING_BODY.match(text, index).end()
                if index >= len(text):
                    return None
                if text[index] == "\\":  # the last character: its escaped one comes next
                    self._escaped = True
                    return None
                index += 1
                self.in_string = False
                if self._depth == 0:
                    return index
            else:
                index = _SKIP_TO_BRACKET.match(text, index).end()
                if index >= len(text):
                    return None
                found = text[index]
                index += 1
                if found == '"':
                    self.in_string = True
                elif found in _OPENERS:
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        return index
