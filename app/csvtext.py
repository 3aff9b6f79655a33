"""Uploaded CSV files as text: UTF-8 decoded as it streams, a line at a time, and the
delimiter found in the header. Shared by the features that read CSV uploads; each checks its
own columns and rows."""

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

DELIMITERS = (",", ";", "\t")
CHUNK_BYTES = 64 * 1024
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ZIP_MAGIC = b"PK\x03\x04"
Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one row (or the file, row 0), and where."""

    row: int
    column: str | None
    message: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "message": self.message,
            "severity": self.severity,
        }


class CSVFormatError(Exception):
    """The upload as a whole is not a usable CSV; `message` says why (the caller's 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingColumns(CSVFormatError):
    def __init__(self, columns: list[str]) -> None:
        super().__init__(
            f"missing required columns: {', '.join(columns)} "
            "(the first row must be the header naming the columns)"
        )
        self.columns = columns


def detect_delimiter(header_line: str) -> str:
    """The most frequent of `,` `;` tab outside quotes; `,` on a tie or when none occurs."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals: ","


def _breaks(text: str) -> int:
    return len(_LINE_BREAK.findall(text))


def decoded_lines(stream: BinaryIO, *, max_line_chars: int) -> Iterator[str]:
    """Physical lines of UTF-8 text (a BOM dropped), each with its line break, as `csv` wants
    them; `\\r\\n`, `\\n` and a lone `\\r` all end a line. Binary, UTF-16, a workbook, text
    that is not UTF-8 (with its line) and an overlong line are CSVFormatError."""
    chunk = stream.read(CHUNK_BYTES) or b""
    if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CSVFormatError("the file is UTF-16 text; save it as CSV UTF-8")
    if chunk.startswith(_ZIP_MAGIC):
        raise CSVFormatError("the file is a ZIP or Excel workbook; save it as CSV UTF-8")
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line_number = 1  # the line `pending` starts on
    pending = ""
    while True:
        final = not chunk
        try:
            text = decoder.decode(chunk, final=final)
        except UnicodeDecodeError as error:
            before = error.object[: error.start].decode("utf-8", errors="replace")
            line = line_number + _breaks(pending + before)
            raise CSVFormatError(f"not UTF-8 text (line {line}); save it as CSV UTF-8") from None
        if "\x00" in text:
            line = line_number + _breaks(pending + text[: text.index("\x00")])
            raise CSVFormatError(f"binary content, not CSV text (a NUL byte on line {line})")
        pending += text
        start = 0
        for match in _LINE_BREAK.finditer(pending):
            if match.group() == "\r" and match.end() == len(pending) and not final:
                break  # may be the first half of a "\r\n" split across chunks
            yield pending[start : match.end()]
            start = match.end()
            line_number += 1
        pending = pending[start:]
        if len(pending) > max_line_chars:
            raise CSVFormatError(f"line {line_number} is longer than {max_line_chars} characters")
        if final:
            if pending:
                yield pending
            return
        chunk = stream.read(CHUNK_BYTES) or b""
