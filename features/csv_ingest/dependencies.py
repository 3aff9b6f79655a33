from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from app.errors import UnprocessableContent, UnsupportedMediaType
from features.csv_ingest.handlers import UploadedFile
from features.patients import dependencies as patients_dependencies

CareTeamMember = patients_dependencies.CareTeamMember


async def uploaded_csv(request: Request) -> AsyncIterator[UploadedFile]:
    """The multipart field `file`. The body is capped while it streams in (CSV_MAX_BYTES, by
    BodySizeLimitMiddleware) and the form parser spools the file to disk past 1 MB, so a large
    file is never held in memory."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Send the CSV as multipart/form-data with the field 'file', not "
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


UploadedCSV = Annotated[UploadedFile, Depends(uploaded_csv)]
