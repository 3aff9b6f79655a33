"""A view's rows as the client asked for them: JSON (an array), NDJSON or CSV, as chunks of
bytes to stream."""

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

RowFormat = Literal["json", "ndjson", "csv"]
MEDIA_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _csv_value(value: Any) -> Any:
    value = _json_value(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


async def encode_rows(
    rows: AsyncIterator[Sequence[Any]], names: list[str], fmt: str
) -> AsyncIterator[bytes]:
    """Rows as JSON (an array), NDJSON or CSV, a few hundred rows per chunk."""
    buffer: list[str] = []
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        async for row in rows:
            writer.writerow([_csv_value(v) for v in row])
            if out.tell() > 64 * 1024:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()
        return
    first = True
    if fmt == "json":
        yield b"["
    async for row in rows:
        line = json.dumps(dict(zip(names, map(_json_value, row), strict=True)))
        if fmt == "json":
            line = line if first else "," + line
            first = False
        else:
            line += "\n"
        buffer.append(line)
        if len(buffer) >= 500:
            yield "".join(buffer).encode()
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode()
    if fmt == "json":
        yield b"]"
