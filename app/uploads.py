"""Uploaded files for the features that take one: the multipart field `file`, and a stream
wrapper that counts and hashes what is read through it."""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, Request

from app.errors import UnprocessableContent, UnsupportedMediaType


@dataclass(frozen=True, slots=True)
class UploadedFile:
    filename: str
    stream: BinaryIO


async def uploaded_file(request: Request) -> AsyncIterator[UploadedFile]:
    """The multipart field `file`. The body is capped while it streams in (the route's limit in
    BodySizeLimitMiddleware) and the form parser spools the file to disk past 1 MB, so a large
    file is never held in memory."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send the file as multipart/form-data with the field 'file', not "
            f"{content_type or 'no content type'}."
        )
    async with request.form(max_files=1, max_fields=2) as form:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UnprocessableContent(
                "Send the file as the multipart field 'file'.",
                errors=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
            )
        yield UploadedFile(filename=file.filename or "upload.csv", stream=file.file)


UploadedFileDep = Annotated[UploadedFile, Depends(uploaded_file)]


def file_request_body(description: str) -> dict[str, Any]:
    """The OpenAPI of a route that reads `file` itself (`openapi_extra=`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": description,
                            }
                        },
                    }
                }
            },
        }
    }


class HashingReader:
    """A binary stream that counts and hashes (SHA-256) what is read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
