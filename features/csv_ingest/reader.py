"""Read a patient CSV upload into validated rows, one record at a time.

`read_csv` never holds the file in memory: it decodes the byte stream in chunks, hands the
`csv` module one physical line at a time and yields each record as soon as it is parsed, so an
upload of any size costs the memory of one row. Problems with the file as a whole (not text,
no header, missing columns, a value too large to be data) raise `CSVFormatError`, which the
caller answers with a 422; problems with one row make that row a `RowError` and the others go
on. A decoding error can only be seen when its line is reached, so `CSVFormatError` can also be
raised after rows were yielded: the caller then drops the whole upload.
"""

from __future__ import annotations

import csv
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, BinaryIO

from app.csvtext import (
    CSVFormatError,
    MissingColumns,
    Problem,
    decoded_lines,
    detect_delimiter,
)

REQUIRED_COLUMNS = ("patient_id", "given_name", "family_name", "birth_date", "gender")
OPTIONAL_COLUMNS = ("conditions", "observations", "observation_date")

# Header names people commonly use, after normalisation (trimmed, casefolded, runs of spaces,
# hyphens and dots turned into one "_"). "patient" and "name" are left out on purpose: a column
# called that holds a full name as often as an id.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": (
        "patientid", "id", "mrn", "medical_record_number", "record_number", "patient_number",
        "patient_no", "patient_identifier", "identifier", "external_id",
    ),
    "given_name": (
        "first_name", "firstname", "given", "givenname", "given_names", "forename", "forenames",
        "first",
    ),
    "family_name": ("last_name", "lastname", "surname", "family", "familyname", "last"),
    "birth_date": ("dob", "d_o_b", "date_of_birth", "birthdate", "birthday", "born"),
    "gender": ("sex", "administrative_gender"),
    "conditions": ("condition", "diagnoses", "diagnosis", "problems", "problem_list"),
    "observations": ("observation", "vitals", "vital_signs", "measurements", "results"),
    "observation_date": (
        "observation_datetime", "observed_at", "observed_on", "observation_time",
        "effective_date", "measurement_date", "date_observed", "visit_date", "encounter_date",
    ),
}  # fmt: skip

GENDERS = {"male": "male", "m": "male", "female": "female", "f": "female", "other": "other"}
GENDERS |= {"o": "other", "unknown": "unknown", "u": "unknown"}

MAX_PATIENT_ID = 64
MAX_NAME = 100
MAX_TERM = 200
MAX_UNIT = 30
MAX_COLUMNS = 200
# Far above any real cell (a row's observations included): a longer one is a quote left open
# or a file that is not this CSV, and parsing on would only waste memory.
MAX_CELL_CHARS = 10_000
MAX_LINE_CHARS = 1_000_000

_HEADER_SEPARATORS = re.compile(r"[\s\-.]+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*")
_NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
# "72 kg", "72kg", "80 /min", "37.2°C", "72" (a unit glued on must not start like a number).
_UNIT = r"(?:\s+(?P<unit>\S.*)|(?!/\d)(?P<glued>[^\s\d.,].*))?"
_QUANTITY = re.compile(rf"(?P<value>{_NUMBER}){_UNIT}")
_PAIR = re.compile(rf"(?P<first>{_NUMBER})\s*/\s*(?P<second>{_NUMBER}){_UNIT}")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(\s.*)?")
# Cells may list several items on separate lines (Alt+Enter in a spreadsheet) as well as with ";".
_ITEM_SEPARATOR = re.compile(r";|\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class ObservationValue:
    """One `name=value unit` item: either a single `value`, or a pair (`systolic`/`diastolic`)
    written as `120/80`, which only a blood-pressure-like panel can take."""

    name: str
    value: Decimal | None
    unit: str | None
    systolic: Decimal | None = None
    diastolic: Decimal | None = None

    @property
    def is_pair(self) -> bool:
        return self.systolic is not None

    @property
    def text(self) -> str:
        """The value as written, for when it can only be sent as text."""
        number = f"{self.systolic}/{self.diastolic}" if self.is_pair else str(self.value)
        return f"{number} {self.unit}" if self.unit else number

    def to_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "value": _decimal_to_json(self.value),
            "unit": self.unit,
            "systolic": _decimal_to_json(self.systolic),
            "diastolic": _decimal_to_json(self.diastolic),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObservationValue:
        return cls(
            name=data["name"],
            value=_decimal_from_json(data.get("value")),
            unit=data.get("unit"),
            systolic=_decimal_from_json(data.get("systolic")),
            diastolic=_decimal_from_json(data.get("diastolic")),
        )


@dataclass(slots=True)
class ParsedRow:
    row: int
    patient_id: str
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    gender: str | None
    conditions: list[str] = field(default_factory=list)
    observations: list[ObservationValue] = field(default_factory=list)
    observation_date: date | datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe (dates as ISO strings, decimals as strings), for storing between the
        request and the job; `from_json` gives back an equal row."""
        return {
            "row": self.row,
            "patient_id": self.patient_id,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "gender": self.gender,
            "conditions": list(self.conditions),
            "observations": [item.to_json() for item in self.observations],
            "observation_date": (
                self.observation_date.isoformat() if self.observation_date else None
            ),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParsedRow:
        birth_date = data.get("birth_date")
        observed = data.get("observation_date")
        return cls(
            row=data["row"],
            patient_id=data["patient_id"],
            given_name=data.get("given_name"),
            family_name=data.get("family_name"),
            birth_date=date.fromisoformat(birth_date) if birth_date else None,
            gender=data.get("gender"),
            conditions=list(data.get("conditions") or []),
            observations=[ObservationValue.from_json(i) for i in data.get("observations") or []],
            # date.isoformat() never has a "T", datetime.isoformat() always has one.
            observation_date=(
                None
                if not observed
                else datetime.fromisoformat(observed)
                if "T" in observed
                else date.fromisoformat(observed)
            ),
        )


@dataclass(slots=True)
class RowError:
    """A row that failed validation: its number, its cells as read (keyed by the canonical
    column name, recognised columns only) and every problem found in it."""

    row: int
    cells: dict[str, str]
    problems: list[Problem]

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "cells": dict(self.cells),
            "problems": [problem.to_dict() for problem in self.problems],
        }


def read_csv(stream: BinaryIO, *, today: date | None = None) -> CSVReader:
    """Check the header and the first data row now, then yield rows as they are iterated.

    Raises CSVFormatError at once for a file that is not text, empty, header-only or has a bad
    header; later, only for a decoding error or an oversized value further down the file.
    """
    return CSVReader(stream, today=today or date.today())


class CSVReader(Iterator[ParsedRow | RowError]):
    """Iterates the rows of one upload; `warnings` lists header columns that were ignored."""

    def __init__(self, stream: BinaryIO, *, today: date) -> None:
        self.today = today
        self.warnings: list[Problem] = []
        lines = decoded_lines(stream, max_line_chars=MAX_LINE_CHARS)
        blank_lines, header_text = _header_record(lines)
        self.delimiter = detect_delimiter(header_text)
        self._records = csv.reader(
            itertools.chain([header_text], lines), delimiter=self.delimiter, strict=True
        )
        self._record_number = blank_lines
        self.header_row: int | None = None
        header = self._next_record()
        if header is None:
            raise CSVFormatError("the file has no data rows")
        self.header_row = self._record_number
        self._header_width = len(header)
        self.columns = self._read_header(header, self.header_row)
        self._first = self._next_data_record()
        if self._first is None:
            raise CSVFormatError("the file has no data rows")

    def __iter__(self) -> CSVReader:
        return self

    def __next__(self) -> ParsedRow | RowError:
        record = self._first or self._next_data_record()
        self._first = None
        if record is None:
            raise StopIteration
        return self._parse_record(record)

    def _next_record(self) -> list[str] | None:
        try:
            record = next(self._records)
        except StopIteration:
            return None
        except csv.Error as error:
            where = "the header" if self.header_row is None else f"row {self._record_number + 1}"
            if "unexpected end of data" in str(error):
                raise CSVFormatError(f"{where}: a quoted value is never closed") from None
            raise CSVFormatError(f"{where} is not valid CSV: {error}") from None
        self._record_number += 1
        if len(record) > MAX_COLUMNS:
            raise CSVFormatError(
                f"row {self._record_number} has {len(record)} columns; at most {MAX_COLUMNS}"
            )
        for cell in record:
            if len(cell) > MAX_CELL_CHARS:
                raise CSVFormatError(
                    f"row {self._record_number} has a value longer than {MAX_CELL_CHARS} "
                    "characters (a quote left open?)"
                )
        return record

    def _next_data_record(self) -> tuple[int, list[str]] | None:
        """The next record with any content; blank ones still count in the row numbers, as a
        spreadsheet shows them."""
        while (record := self._next_record()) is not None:
            if any(cell.strip() for cell in record):
                return self._record_number, record
        return None

    def _read_header(self, header: list[str], header_row: int) -> dict[int, str]:
        canonical_by_alias = _canonical_names()
        positions: dict[int, str] = {}
        seen: dict[str, list[str]] = {}
        for position, written in enumerate(header):
            name = normalise_header(written)
            canonical = canonical_by_alias.get(name)
            if canonical is None:
                if name:
                    message = f"column '{written.strip()}' is not used: ignored"
                    self.warnings.append(Problem(header_row, written.strip(), message, "warning"))
                continue
            positions[position] = canonical
            seen.setdefault(canonical, []).append(written.strip())
        duplicates = {name: written for name, written in seen.items() if len(written) > 1}
        if duplicates:
            described = "; ".join(
                f"{name} ({', '.join(repr(w) for w in written)})"
                for name, written in duplicates.items()
            )
            raise CSVFormatError(f"duplicate columns: {described}")
        missing = [name for name in REQUIRED_COLUMNS if name not in seen]
        if missing:
            raise MissingColumns(missing)
        return positions

    def _parse_record(self, numbered: tuple[int, list[str]]) -> ParsedRow | RowError:
        row, record = numbered
        cells = {name: record[i] if i < len(record) else "" for i, name in self.columns.items()}
        problems: list[Problem] = []
        # Trailing empty cells are what spreadsheets write; filled ones mean the row is shifted.
        if any(cell.strip() for cell in record[self._header_width :]):
            problems.append(
                Problem(
                    row,
                    None,
                    f"{len(record)} values but the header has {self._header_width} columns "
                    "(an unquoted delimiter inside a value?)",
                )
            )
        parsed = _validate(row, {k: v.strip() for k, v in cells.items()}, problems, self.today)
        if problems:
            return RowError(row=row, cells=cells, problems=problems)
        return parsed


def normalise_header(written: str) -> str:
    name = unicodedata.normalize("NFKC", written).strip().casefold()
    return _HEADER_SEPARATORS.sub("_", name).strip("_")


def _canonical_names() -> dict[str, str]:
    names = {name: name for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
    for canonical, aliases in COLUMN_ALIASES.items():
        names.update(dict.fromkeys(aliases, canonical))
    return names


def _header_record(lines: Iterator[str]) -> tuple[int, str]:
    """The header's text (its first line, and more while a quoted name spans lines) and the
    number of blank lines before it."""
    blank_lines = 0
    parts: list[str] = []
    for line in lines:
        if not parts and not line.strip():
            blank_lines += 1
            continue
        parts.append(line)
        text = "".join(parts)
        if text.count('"') % 2 == 0:
            return blank_lines, text
        if len(parts) >= 10:
            break
    if parts:
        raise CSVFormatError("the header is not valid CSV: a quoted name is never closed")
    raise CSVFormatError("the file has no data rows")


def _validate(row: int, cells: dict[str, str], problems: list[Problem], today: date) -> ParsedRow:
    """Check every cell (already trimmed), appending to `problems`; the row returned is only
    meaningful when none were added."""

    def error(column: str, message: str) -> None:
        problems.append(Problem(row, column, message))

    patient_id = cells.get("patient_id", "")
    if not patient_id:
        error("patient_id", "patient_id is required")
    elif len(patient_id) > MAX_PATIENT_ID:
        error("patient_id", f"patient_id is longer than {MAX_PATIENT_ID} characters")

    given_name = cells.get("given_name") or None
    family_name = cells.get("family_name") or None
    if not given_name and not family_name:
        error("given_name", "a given name or a family name is required")
    for column, name in (("given_name", given_name), ("family_name", family_name)):
        if name and len(name) > MAX_NAME:
            error(column, f"{column} is longer than {MAX_NAME} characters")

    birth_date = None
    if written := cells.get("birth_date"):
        birth_date = _parse_date(written)
        if birth_date is None:
            error("birth_date", _date_problem(written, "YYYY-MM-DD"))
        elif birth_date > today:
            error("birth_date", f"birth_date {written} is in the future")

    gender = None
    if written := cells.get("gender"):
        gender = GENDERS.get(written.casefold())
        if gender is None:
            error("gender", f"'{written}' is not one of male, female, other, unknown (M/F/O/U)")

    conditions: list[str] = []
    for term in _items(cells.get("conditions", "")):
        if len(term) > MAX_TERM:
            error("conditions", f"condition '{term[:40]}...' is longer than {MAX_TERM} characters")
        elif term not in conditions:
            conditions.append(term)

    observations: list[ObservationValue] = []
    for item in _items(cells.get("observations", "")):
        parsed = _parse_observation(item)
        if isinstance(parsed, str):
            error("observations", parsed)
        elif any(o.name.casefold() == parsed.name.casefold() for o in observations):
            error("observations", f"observation '{parsed.name}' is given twice")
        else:
            observations.append(parsed)

    observation_date = None
    if written := cells.get("observation_date"):
        observation_date = _parse_date_or_date_time(written)
        if observation_date is None:
            error(
                "observation_date",
                _date_problem(written, "YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][+hh:mm]"),
            )
        elif _day(observation_date) > today:
            error("observation_date", f"observation_date {written} is in the future")
        elif birth_date and _day(observation_date) < birth_date:
            error("observation_date", f"observation_date {written} is before the birth date")
    elif observations or cells.get("observations"):
        error("observation_date", "observation_date is required when observations are given")

    return ParsedRow(
        row=row,
        patient_id=patient_id,
        given_name=given_name,
        family_name=family_name,
        birth_date=birth_date,
        gender=gender,
        conditions=conditions,
        observations=observations,
        observation_date=observation_date,
    )


def _items(cell: str) -> list[str]:
    return [item.strip() for item in _ITEM_SEPARATOR.split(cell) if item.strip()]


def _parse_observation(item: str) -> ObservationValue | str:
    """The item, or the message saying what is wrong with it."""
    name, equals, written = item.partition("=")
    name, written = name.strip(), written.strip()
    if not equals or not name:
        return f"observation '{item}' is not written as name=value unit"
    if len(name) > MAX_TERM:
        return f"observation '{name[:40]}...' has a name longer than {MAX_TERM} characters"
    if not written:
        return f"observation '{name}' has no value"
    if pair := _PAIR.fullmatch(written):
        unit = pair["unit"] or pair["glued"]
        values = {"systolic": Decimal(pair["first"]), "diastolic": Decimal(pair["second"])}
        observation = ObservationValue(name, None, unit, **values)
    elif quantity := _QUANTITY.fullmatch(written):
        unit = quantity["unit"] or quantity["glued"]
        observation = ObservationValue(name, Decimal(quantity["value"]), unit and unit.strip())
    else:
        hint = " (use '.' for decimals)" if _DECIMAL_COMMA.fullmatch(written) else ""
        return f"observation '{name}': '{written}' is not a number{hint}"
    if observation.unit and len(observation.unit) > MAX_UNIT:
        return f"observation '{name}' has a unit longer than {MAX_UNIT} characters"
    return observation


def _parse_date(written: str) -> date | None:
    if not _ISO_DATE.fullmatch(written):
        return None
    try:
        return date.fromisoformat(written)
    except ValueError:
        return None


def _parse_date_or_date_time(written: str) -> date | datetime | None:
    if _ISO_DATE.fullmatch(written):
        return _parse_date(written)
    if not _ISO_DATE_TIME.fullmatch(written):
        return None
    try:
        return datetime.fromisoformat(written)
    except ValueError:
        return None


def _date_problem(written: str, expected: str) -> str:
    if _ISO_DATE.match(written):
        return f"'{written}' is not a real date or time"
    return f"'{written}' is not a date written as {expected}"


def _day(value: date | datetime) -> date:
    """The calendar day as written (a date-time's own, not converted to any time zone)."""
    return value.date() if isinstance(value, datetime) else value


def _decimal_to_json(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal_from_json(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)
