"""Validate an upload of TM2 diagnoses (CSV) row by row, never holding the file in memory.

`read_upload` decodes the byte stream in chunks, hands `csv` one line at a time and yields
each row as soon as it is checked, so a file of any size costs the memory of one row. What is
wrong with the file as a whole (not UTF-8 text, empty, no data rows, a required column
missing) raises `CSVFormatError`, which the caller answers with a 422; what is wrong with one
row makes it an `InvalidRow` and the others go on. The header and the first data row are read
before `read_upload` returns, so most format errors come at once; a line that is not UTF-8 or
not CSV further down can only be seen when it is reached, and raises then.

Cells are only ever read as text: a cell starting with "=", "+", "-" or "@" is kept as written,
never evaluated nor changed.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import BinaryIO

from app.csvtext import (
    CSVFormatError,
    MissingColumns,
    Problem,
    Severity,
    decoded_lines,
    detect_delimiter,
)
from features.tm2_ingest.codes import codes_in, titles_match

COLUMNS = (
    "patient_id",
    "tm2_code",
    "condition_name",
    "system_type",
    "severity",
    "diagnosis_date",
    "practitioner_id",
)
# Free-text cells and their longest accepted value (the sizes of the tm2_records columns); the
# other cells are checked against a list or parsed.
IDENTIFIERS = ("patient_id", "practitioner_id")
MAX_LENGTHS = {"patient_id": 64, "tm2_code": 100, "condition_name": 255, "practitioner_id": 64}

SYSTEM_TYPES = (
    "Ayurveda",
    "Siddha",
    "Unani",
    "Traditional Chinese Medicine",
    "Kampo",
    "Korean Medicine",
    "Other",
)
# Only abbreviations that mean one system: "KM" is left out, as it is said of Korean Medicine
# and of Kampo Medicine alike.
SYSTEM_TYPE_ALIASES = {"tcm": "Traditional Chinese Medicine", "tkm": "Korean Medicine"}
SEVERITIES = ("Mild", "Moderate", "Severe")

# Far above any real row: a longer line is a file that is not this CSV.
MAX_LINE_CHARS = 100_000

_HEADER_SEPARATORS = re.compile(r"[\s\-]+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class ValidRow:
    """A row that can be stored: values trimmed, the code normalised, system type and
    severity in their canonical spelling; `raw` holds the seven cells exactly as written."""

    row: int
    patient_id: str
    code: str
    condition_name: str
    system_type: str
    severity: str
    diagnosis_date: date
    practitioner_id: str
    raw: dict[str, str]
    warnings: tuple[Problem, ...]

    @property
    def dedupe_key(self) -> str:
        """The same for the same diagnosis however its row was written: same patient, code,
        day and practitioner (the ids are compared as normalised, their case kept, since
        identifiers can be case-sensitive). Ids hold no control characters, so the separator
        cannot occur inside a part."""
        parts = (self.patient_id, self.code, self.diagnosis_date.isoformat(), self.practitioner_id)
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that cannot be stored: its cells as written and every problem found (warnings
    included)."""

    row: int
    raw: dict[str, str]
    problems: tuple[Problem, ...]


def read_upload(
    stream: BinaryIO, lookup: Callable[[str], str | None], *, today: date | None = None
) -> Iterator[ValidRow | InvalidRow]:
    """Check the header and find the first data row now; check and yield rows as iterated.

    `lookup(code)` gives the official title of a TM2 code, or None when it is not in the list.
    Row numbers are as a spreadsheet shows them: the header is row 1 (or lower, after blank
    lines), a value spanning lines is one row, blank rows count but are not yielded.
    """
    records = _records(stream)
    _, header = next(records, (0, None))
    if header is None:
        raise CSVFormatError("the file is empty")
    positions = _header_positions(header)
    first = next(records, None)
    if first is None:
        raise CSVFormatError("the file has a header but no data rows")
    checker = _RowChecker(positions, len(header), lookup, today or date.today())
    return (checker.check(row, record) for row, record in itertools.chain([first], records))


def normalise_header(written: str) -> str:
    name = unicodedata.normalize("NFKC", written).strip().casefold()
    return _HEADER_SEPARATORS.sub("_", name)


def _header_positions(header: list[str]) -> dict[str, int]:
    """Where each required column is; other columns are ignored, and not kept in `raw`, since
    they may hold what the clinic never meant to send."""
    positions: dict[str, int] = {}
    for position, written in enumerate(header):
        name = normalise_header(written)
        if name in COLUMNS:
            if name in positions:
                raise CSVFormatError(f"the column {name} is given twice")
            positions[name] = position
    missing = [name for name in COLUMNS if name not in positions]
    if missing:
        raise MissingColumns(missing)
    return positions


class _RowChecker:
    def __init__(
        self,
        positions: dict[str, int],
        header_width: int,
        lookup: Callable[[str], str | None],
        today: date,
    ) -> None:
        self.positions = positions
        self.header_width = header_width
        self.lookup = lookup
        self.today = today

    def check(self, row: int, record: list[str]) -> ValidRow | InvalidRow:
        raw = {name: record[i] if i < len(record) else "" for name, i in self.positions.items()}
        cells = {name: value.strip() for name, value in raw.items()}
        for column in IDENTIFIERS:
            # The compatibility form (full-width letters and digits, typed with an East Asian
            # input method, made plain), so the same id is the same however it was typed.
            cells[column] = unicodedata.normalize("NFKC", cells[column]).strip()
        problems: list[Problem] = []

        def add(column: str | None, message: str, severity: Severity = "error") -> None:
            problems.append(Problem(row, column, message, severity))

        # Trailing empty cells are what spreadsheets write; filled ones mean the row is shifted.
        if any(cell.strip() for cell in record[self.header_width :]):
            add(
                None,
                f"{len(record)} values but the header has {self.header_width} columns "
                "(an unquoted delimiter inside a value?)",
            )
        for column in COLUMNS:
            limit = MAX_LENGTHS.get(column)
            if not cells[column]:
                add(column, f"{column} is required")
            elif limit and len(cells[column]) > limit:
                add(column, f"{column} is longer than {limit} characters")
        for column in IDENTIFIERS:
            if _CONTROL.search(cells[column]):
                add(column, f"{column} contains a control character (a line break, a tab...)")
        code = self._code(cells, add)
        system_type = _one_of("system_type", cells, _SYSTEM_TYPES_FOLDED, add)
        severity = _one_of("severity", cells, _SEVERITIES_FOLDED, add)
        diagnosis_date = self._diagnosis_date(cells, add)

        if any(problem.severity == "error" for problem in problems):
            return InvalidRow(row=row, raw=raw, problems=tuple(problems))
        assert code and system_type and severity and diagnosis_date  # no error: all were read
        return ValidRow(
            row=row,
            patient_id=cells["patient_id"],
            code=code,
            condition_name=cells["condition_name"],
            system_type=system_type,
            severity=severity,
            diagnosis_date=diagnosis_date,
            practitioner_id=cells["practitioner_id"],
            raw=raw,
            warnings=tuple(problems),
        )

    def _code(self, cells: dict[str, str], add: Callable[..., None]) -> str | None:
        written = cells["tm2_code"]
        if not written or len(written) > MAX_LENGTHS["tm2_code"]:
            return None
        codes = codes_in(written)
        if not codes:
            add("tm2_code", f"{_shown(written)} is not a TM2 code (ICD-11 chapter 26, e.g. SK00)")
            return None
        if len(codes) > 1:
            add("tm2_code", f"several codes in one cell ({', '.join(codes)}): one per row")
            return None
        code = codes[0]
        official = self.lookup(code)
        if official is None:
            add("tm2_code", f"{code} is not in the TM2 code list")
            return None
        given = cells["condition_name"]
        if given and not titles_match(given, official):
            add(
                "condition_name",
                f"{_shown(given)} is not the official title of {code}: '{official}'",
                "warning",
            )
        return code

    def _diagnosis_date(self, cells: dict[str, str], add: Callable[..., None]) -> date | None:
        written = cells["diagnosis_date"]
        if not written:
            return None
        day = _parse_day(written)
        if day is None:
            add(
                "diagnosis_date",
                f"{_shown(written)} is not a date written as YYYY-MM-DD "
                "(or a date-time YYYY-MM-DDThh:mm[:ss][±hh:mm])",
            )
        elif day > self.today:
            add("diagnosis_date", f"diagnosis_date {written} is in the future")
            return None
        return day


def _folded(value: str) -> str:
    return " ".join(value.replace("-", " ").split()).casefold()


_SYSTEM_TYPES_FOLDED = {_folded(name): name for name in SYSTEM_TYPES} | SYSTEM_TYPE_ALIASES
_SEVERITIES_FOLDED = {_folded(name): name for name in SEVERITIES}


def _one_of(
    column: str, cells: dict[str, str], canonical: dict[str, str], add: Callable[..., None]
) -> str | None:
    written = cells[column]
    if not written:
        return None
    value = canonical.get(_folded(written))
    if value is None:
        accepted = ", ".join(dict.fromkeys(canonical.values()))
        add(column, f"{column} {_shown(written)} is not one of {accepted}")
    return value


def _parse_day(written: str) -> date | None:
    """The calendar day of an ISO 8601 date or date-time, as written (not moved to any time
    zone). Only the extended form: "20240305" or week dates are refused, as people rarely mean
    them."""
    try:
        if _ISO_DATE.fullmatch(written):
            return date.fromisoformat(written)
        if _ISO_DATE_TIME.fullmatch(written):
            return datetime.fromisoformat(written).date()
    except ValueError:
        pass
    return None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


# --- from bytes to records ---------------------------------------------------------------


def _records(stream: BinaryIO) -> Iterator[tuple[int, list[str]]]:
    """Each record that has content, with its row number; the delimiter is the header's."""
    lines = decoded_lines(stream, max_line_chars=MAX_LINE_CHARS)
    row = 0
    for line in lines:
        row += 1
        if line.strip():
            break
    else:
        return
    delimiter = detect_delimiter(line)
    records = csv.reader(itertools.chain([line], lines), delimiter=delimiter, strict=True)
    row -= 1
    while True:
        try:
            record = next(records, None)
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                raise CSVFormatError(f"row {row + 1}: a quoted value is never closed") from None
            raise CSVFormatError(f"row {row + 1} is not valid CSV: {error}") from None
        if record is None:
            return
        row += 1
        if any(cell.strip() for cell in record):
            yield row, record
