"""What the flatten routes bind besides the kernel's session and sessionmaker: who may load or
read, the FHIR input of a load (checked and spooled), and a row query's column filters."""

import io
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, BinaryIO

from fastapi import Depends, Request

from app.errors import UnsupportedMediaType
from app.security import Principal, Role, require_roles

Loader = Annotated[Principal, require_roles(Role.ADMIN, Role.ANALYST)]
Reader = Annotated[Principal, require_roles(Role.ADMIN, Role.ANALYST, Role.CLINICIAN)]

JSON_TYPES = ("application/json", "application/fhir+json")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
# The query parameters of a row query that are not column filters.
ROW_OPTIONS = ("format", "limit", "offset")


@dataclass(frozen=True, slots=True)
class FhirInput:
    """A load's body, spooled, and its media type (without parameters)."""

    body: BinaryIO
    content_type: str


async def _spooled_body(request: Request) -> BinaryIO:
    """The body, in memory up to 8 MB, else in a named temporary file (which the flatten
    worker process opens by its name); the size limit is enforced while it streams by
    BodySizeLimitMiddleware (FLATTEN_MAX_BYTES)."""
    body: BinaryIO = io.BytesIO()
    try:
        async for chunk in request.stream():
            body.write(chunk)
            if isinstance(body, io.BytesIO) and body.tell() > SPOOL_IN_MEMORY_BYTES:
                on_disk = tempfile.NamedTemporaryFile(prefix="flatten-upload-")  # noqa: SIM115
                on_disk.write(body.getvalue())
                body = on_disk
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body


async def fhir_input(request: Request) -> AsyncIterator[FhirInput]:
    """The body of a load, in an accepted media type; closed (a spool file removed) as soon as
    the route returns."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*JSON_TYPES, *NDJSON_TYPES):
        raise UnsupportedMediaType(
            "Send application/fhir+json (a Bundle or a resource) or application/fhir+ndjson, "
            f"not {content_type or 'no content type'}."
        )
    with await _spooled_body(request) as body:
        yield FhirInput(body, content_type)


# scope="function": the spool goes when the route returns, before the response is sent.
SpooledInput = Annotated[FhirInput, Depends(fhir_input, scope="function")]


async def row_filters(request: Request) -> dict[str, str]:
    """`?column=value` filters: every query parameter but the row query's own options."""
    return {key: value for key, value in request.query_params.items() if key not in ROW_OPTIONS}


RowFilters = Annotated[dict[str, str], Depends(row_filters)]
