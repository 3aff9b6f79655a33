"""ICD-11 chapter 26 Traditional Medicine codes ("TM2"): their shape, how clinics write them,
the WHO code list file, and whether a written condition name is the official title."""

from __future__ import annotations

import codecs
import csv
import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# The shapes of all 648 codes of the WHO list (release 2026-01): "S", a block letter K to T
# without O, a digit, then a digit or a letter other than I and O (ICD-11 never uses I or O,
# so that they are not read as 1 and 0). No code has a dot-suffix; residual categories end in
# Y ("other specified") or Z ("unspecified").
TM2_CODE = re.compile(r"S[K-NP-T][0-9][0-9A-HJ-NP-Z]")

# A code standing alone in a cell's text. A code followed by ".<letter or digit>" is a finer
# code than any in the list: it is not cut down to its parent, which would change its meaning.
_CODE_IN_TEXT = re.compile(rf"(?<![0-9A-Z])(?:{TM2_CODE.pattern})(?![0-9A-Z]|\.[0-9A-Z])")
# NFKC already turns no-break, figure and narrow no-break spaces (and full-width letters)
# into plain ones; zero-width characters survive it and would split a code.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))

REQUIRED_LIST_COLUMNS = ("code", "title", "class_kind", "version")
CODE_CLASS_KINDS = frozenset({"category"})
# Rows that group codes (a chapter, a block) and have no code of their own.
GROUPING_CLASS_KINDS = frozenset({"chapter", "block", "window"})
# The sizes of the tm2_codes columns, checked here so that a bad file names its row.
MAX_TITLE = 500
MAX_URI = 200
MAX_RELEASE = 20
CHUNK_BYTES = 64 * 1024

_APOSTROPHES = dict.fromkeys(map(ord, "'\u2019\u02bc\u2018`"))
_NOT_WORD = re.compile(r"[\W_]+")
_TM2_MARKER = "tm2"


class CodeListError(Exception):
    """The file is not a usable WHO TM2 code list; `message` names the row at fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class TM2Code:
    code: str
    title: str
    foundation_uri: str | None
    entity_uri: str | None
    release: str


def codes_in(raw: str) -> list[str]:
    """Every distinct TM2 code written in the text, in order, upper-cased: "SR10 (AAA-2.1)"
    gives ["SR10"], "sk00 / SK01" gives ["SK00", "SK01"]."""
    text = unicodedata.normalize("NFKC", raw).translate(_INVISIBLE).upper()
    return list(dict.fromkeys(_CODE_IN_TEXT.findall(text)))


def normalise_code(raw: str) -> str | None:
    """The one TM2 code in the text; None when there is none, or several (which one was meant
    cannot be told)."""
    codes = codes_in(raw)
    return codes[0] if len(codes) == 1 else None


def titles_match(given: str, official: str) -> bool:
    """Equal once case, accents, punctuation, spacing and the "(TM2)" marker are set aside:
    "Vitiation of vata pattern" is "Vitiation of vāta pattern (TM2)", and "Headache
    disorders, unspecified" is "Headache disorders (TM2), unspecified"."""
    return _title_words(given) == _title_words(official)


# Clinics write the same few hundred titles over and over: each is folded once.
@functools.lru_cache(maxsize=16_384)
def _title_words(title: str) -> tuple[str, ...]:
    decomposed = unicodedata.normalize("NFKD", title.translate(_APOSTROPHES))
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return tuple(
        word for word in _NOT_WORD.sub(" ", bare.casefold()).split() if word != _TM2_MARKER
    )


def read_code_list(stream: BinaryIO) -> Iterator[TM2Code]:
    """The codes of a WHO TM2 list file (CSV, UTF-8 with or without BOM, a header naming
    code,title,class_kind,foundation_uri,entity_uri,version), one by one.

    Rows of a grouping class kind are skipped; any other class kind, a missing column, a code
    not shaped like a TM2 code, a code given twice or an empty title raise CodeListError.
    """
    records = csv.reader(_decoded_lines(stream), strict=True)
    row = 0
    try:
        header = next(records, None)
        row = 1
        if header is None:
            raise CodeListError("the code list is empty")
        columns = {name.strip().casefold(): i for i, name in enumerate(header)}
        missing = [name for name in REQUIRED_LIST_COLUMNS if name not in columns]
        if missing:
            raise CodeListError(f"the code list has no column {', '.join(missing)}")
        seen: dict[str, int] = {}
        for row, record in enumerate(records, start=2):
            if not any(cell.strip() for cell in record):
                continue
            cells = {
                name: record[i].strip() if i < len(record) else "" for name, i in columns.items()
            }
            if cells["class_kind"] in GROUPING_CLASS_KINDS:
                continue
            code = _checked_code(row, cells, seen)
            seen[code.code] = row
            yield code
    except UnicodeDecodeError:
        raise CodeListError(f"row {row + 1}: not UTF-8 text") from None
    except csv.Error as error:
        raise CodeListError(f"row {row + 1}: not valid CSV ({error})") from None


def _checked_code(row: int, cells: dict[str, str], seen: dict[str, int]) -> TM2Code:
    def fail(message: str) -> CodeListError:
        return CodeListError(f"row {row}: {message}")

    code, title, release = cells["code"], cells["title"], cells["version"]
    if cells["class_kind"] not in CODE_CLASS_KINDS:
        known = ", ".join(sorted(CODE_CLASS_KINDS | GROUPING_CLASS_KINDS))
        raise fail(f"class_kind {cells['class_kind']!r} is not one of {known}")
    if not TM2_CODE.fullmatch(code):
        raise fail(f"{code!r} is not a TM2 code")
    if code in seen:
        raise fail(f"{code} is already on row {seen[code]}")
    if not title or len(title) > MAX_TITLE:
        raise fail(f"{code} has no title or one longer than {MAX_TITLE} characters")
    if not release or len(release) > MAX_RELEASE:
        raise fail(f"{code} has no version or one longer than {MAX_RELEASE} characters")
    uris = {name: cells.get(name) or None for name in ("foundation_uri", "entity_uri")}
    for name, uri in uris.items():
        if uri and len(uri) > MAX_URI:
            raise fail(f"{code} has a {name} longer than {MAX_URI} characters")
    return TM2Code(code=code, title=title, release=release, **uris)


def _decoded_lines(stream: BinaryIO) -> Iterator[str]:
    """Lines of UTF-8 text (a BOM dropped), each with its "\\n", as `csv` wants them."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    while chunk := stream.read(CHUNK_BYTES):
        *lines, pending = (pending + decoder.decode(chunk)).split("\n")
        yield from (line + "\n" for line in lines)
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending
