"""The PostgreSQL side of a view: its table, column types, and values converted for COPY.

A view's table is `flat_<view name>`: one column per view column, typed after the column's
FHIR type, and `_resource_id`, the id of the resource a row came from, so that loading a
resource again replaces its rows. Collection columns are JSONB arrays.

FHIR dates and dateTimes may be partial (`2020`, `2020-05`) or lack a time zone; the columns
are real `date` / `timestamptz` for dashboards, so a partial value is stored as its earliest
instant and a dateTime without a zone as UTC. The resource itself is kept whole beside them.
"""

import functools
import json
import operator
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    Time,
    any_,
    bindparam,
    delete,
)
from sqlalchemy import Column as TableColumn
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable
from sqlalchemy.types import TypeEngine

from features.fhir_flatten.engine.viewdef import Column

TABLE_PREFIX = "flat_"
KEY_COLUMN = "_resource_id"
VIEW_NAME = re.compile(r"[a-z][a-z0-9_]{0,57}")
MAX_IDENTIFIER = 63  # PostgreSQL's identifier length
MAX_COLUMN_NAME = MAX_IDENTIFIER

SQL_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "integer64": "bigint",
    "decimal": "numeric",
    "date": "date",
    "dateTime": "timestamptz",
    "instant": "timestamptz",
    "time": "time",
}  # everything else (string, code, id, uri, ...) is text

_COLUMN_TYPES: dict[str, TypeEngine] = {
    "boolean": Boolean(),
    "integer": Integer(),
    "bigint": BigInteger(),
    "numeric": Numeric(),
    "date": Date(),
    "timestamptz": DateTime(timezone=True),
    "time": Time(),
    "jsonb": JSONB(),
    "text": Text(),
}


def table_name(view_name: str) -> str:
    return TABLE_PREFIX + view_name


def sql_type(column: Column) -> str:
    if column.collection:
        return "jsonb"
    return SQL_TYPES.get(column.type or "", "text")


def view_table(view_name: str, columns: Sequence[Column] = ()) -> Table:
    """The view's table for SQLAlchemy Core: the key column, then `columns` (pass them all to
    make the table or read its rows; none are needed to count or delete rows)."""
    return _table(view_name, tuple((column.name, sql_type(column)) for column in columns))


# One Table object for each shape of a view's table: SQLAlchemy caches a statement's compiled
# SQL by the identity of its tables, so a new Table per statement would compile every time.
@functools.lru_cache(maxsize=256)
def _table(view_name: str, columns: tuple[tuple[str, str], ...]) -> Table:
    name = table_name(view_name)
    table = Table(
        name,
        MetaData(),  # its own: not the models' metadata, and a view may change its columns
        TableColumn(KEY_COLUMN, Text(), nullable=False),
        *(TableColumn(column, _COLUMN_TYPES[kind], quote=True) for column, kind in columns),
        quote=True,
    )
    # Cut as PostgreSQL cuts an identifier longer than it keeps (names here are ASCII).
    Index(("ix_" + name + "_key")[:MAX_IDENTIFIER], table.c[KEY_COLUMN], quote=True)
    return table


async def create_table(session: AsyncSession, view_name: str, columns: Sequence[Column]) -> None:
    table = view_table(view_name, columns)
    await session.execute(DropTable(table, if_exists=True))
    await session.execute(CreateTable(table))
    for index in table.indexes:
        await session.execute(CreateIndex(index))


async def drop_table(session: AsyncSession, view_name: str) -> None:
    await session.execute(DropTable(view_table(view_name), if_exists=True))


async def delete_rows(session: AsyncSession, view_name: str, resource_ids: list[str]) -> None:
    table = view_table(view_name)
    await session.execute(
        delete(table).where(table.c[KEY_COLUMN] == any_(bindparam("ids", type_=ARRAY(Text())))),
        {"ids": resource_ids},
    )


async def copy_text(session: AsyncSession, table: str, columns: Sequence[str], data: str) -> None:
    """COPY `data`, rows in PostgreSQL's text format (`copy_line`), into `table`."""
    if not data:
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_to_table(
        table, source=_once(data.encode()), columns=list(columns), format="text"
    )


async def copy_rows(
    session: AsyncSession, view_name: str, columns: Sequence[Column], data: str
) -> None:
    """COPY rows made by `copy_line` into the view's table."""
    names = [KEY_COLUMN, *(column.name for column in columns)]
    await copy_text(session, table_name(view_name), names, data)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# --- values --------------------------------------------------------------------------------


class UnstorableValue(ValueError):
    """A value that cannot go in its column: the row's resource is reported, not loaded."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise UnstorableValue(f"{value!r} is not a boolean")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UnstorableValue(f"{value!r} is not an integer")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise UnstorableValue(f"{value!r} is not a decimal")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise UnstorableValue(f"{value!r} is not a decimal") from None


_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


def _date(value: Any) -> date:
    match = _PARTIAL_DATE.fullmatch(str(value)[:10]) if isinstance(value, str) else None
    if not match:
        raise UnstorableValue(f"{value!r} is not a date")
    year, month, day = match.groups()
    return date(int(year), int(month or 1), int(day or 1))


def _date_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise UnstorableValue(f"{value!r} is not a dateTime")
    if len(value) <= 10:
        return datetime.combine(_date(value), time(), UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UnstorableValue(f"{value!r} is not a dateTime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _time(value: Any) -> time:
    try:
        return time.fromisoformat(value)
    except (TypeError, ValueError):
        raise UnstorableValue(f"{value!r} is not a time") from None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "boolean": _boolean,
    "integer": _integer,
    "bigint": _integer,
    "numeric": _decimal,
    "date": _date,
    "timestamptz": _date_time,
    "time": _time,
    "jsonb": json.dumps,
    "text": _text,
}

# --- values as COPY text: one line per row, tab between fields, \N for NULL ---------------

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]")


# "\u0000" in JSON text, not preceded by an escaped backslash: JSONB refuses it.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _copy_escaped(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise UnstorableValue(f"{value[:50]!r} has a NUL character")
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def json_for_copy(value: str) -> str:
    """JSON text as a JSONB field of COPY text (UnstorableValue for a NUL character)."""
    if "\\u0000" in value and _JSON_NUL.search(value):
        raise UnstorableValue(
            "a string has a NUL character (\\u0000), which PostgreSQL cannot store"
        )
    return value.replace("\\", "\\\\")  # JSON text has no raw newline, return or tab


NULL = "\\N"


# Each takes a value of its column, or None, to its COPY text.
def _text_field(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, str):
        if "\\" not in value and value.isprintable():  # the common case: nothing to escape
            return value
        return _copy_escaped(value)
    return _copy_escaped(json.dumps(value))


def _boolean_field(value: Any) -> str:
    return NULL if value is None else "t" if _boolean(value) else "f"


def _integer_field(value: Any) -> str:
    return NULL if value is None else str(_integer(value))


def _decimal_field(value: Any) -> str:
    return NULL if value is None else str(_decimal(value))


def _date_field(value: Any) -> str:
    return NULL if value is None else _date(value).isoformat()


def _date_time_field(value: Any) -> str:
    return NULL if value is None else _date_time(value).isoformat()


def _time_field(value: Any) -> str:
    return NULL if value is None else _time(value).isoformat()


def _json_field(value: Any) -> str:
    return NULL if value is None else json_for_copy(json.dumps(value))


_COPY_TEXT: dict[str, Callable[[Any], str]] = {
    "boolean": _boolean_field,
    "integer": _integer_field,
    "bigint": _integer_field,
    "numeric": _decimal_field,
    "date": _date_field,
    "timestamptz": _date_time_field,
    "time": _time_field,
    "jsonb": _json_field,
    "text": _text_field,
}


def converters(columns: Sequence[Column]) -> list[Callable[[Any], str]]:
    """For each column, what turns a value of it (or None) into COPY text; UnstorableValue when
    the value cannot go in the column."""
    return [_COPY_TEXT[sql_type(column)] for column in columns]


def copy_line(resource_id: str, row: tuple, convert: Sequence[Callable[[Any], str]]) -> str:
    """One row of a view's table in COPY text format: the resource id, then the values."""
    return "\t".join([resource_id, *map(operator.call, convert, row)]) + "\n"


# --- filters on rows: query-string text to the column's type ------------------------------

_TRUE_FALSE = {"true": True, "false": False}


def filter_value(column: Column, written: str) -> Any:
    """A `?column=value` filter as the column's type; UnstorableValue when it cannot be."""
    kind = sql_type(column)
    if kind == "jsonb":
        raise UnstorableValue("a collection column cannot be filtered on")
    try:
        if kind == "boolean":
            return _TRUE_FALSE[written.lower()]
        if kind in ("integer", "bigint"):
            return int(written)
        if kind == "numeric":
            return _decimal(written)
        if kind == "date":
            return date.fromisoformat(written)
        if kind in ("timestamptz", "time"):
            return _CONVERTERS[kind](written)
    except (KeyError, ValueError):
        raise UnstorableValue(f"{written[:50]!r} is not a {column.type}") from None
    return written
