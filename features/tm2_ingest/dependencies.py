from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, BinaryIO

from fastapi import Depends, Request

from app.errors import UnprocessableContent, UnsupportedMediaType


@dataclass(frozen=True, slots=True)
class UploadedFile:
    filename: str
    stream: BinaryIO


async def uploaded_tm2(request: Request) -> AsyncIterator[UploadedFile]:
    """The multipart field `file`; the body is capped while it streams in (TM2_MAX_BYTES) and
    spooled to disk past 1 MB."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send the CSV as multipart/form-data with the field 'file', not "
            f"{content_type or 'no content type'}."
        )
    async with request.form(max_files=1, max_fields=2) as form:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UnprocessableContent(
                "Send the CSV as the multipart field 'file'.",
                errors=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
            )
        yield UploadedFile(filename=file.filename or "upload.csv", stream=file.file)


UploadedTM2 = Annotated[UploadedFile, Depends(uploaded_tm2)]
