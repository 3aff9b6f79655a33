import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import AwareDatetime

from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, PageDep
from app.security import SettingsDep
from features.notes import handlers
from features.notes.dependencies import CareTeamMember, NoteInputDep, PatientId, ValidNote
from features.notes.schemas import NoteCreate, NoteFilters, NoteListItem, NoteRead, NoteType

router = APIRouter(tags=["notes"])

NOTE_TYPES = list(NoteType.__args__)
# The route reads its body itself (JSON or a file upload), so the OpenAPI is written out here.
NOTE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": NoteCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "taken_at"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "Plain text, Markdown, PDF, PNG or JPEG.",
                        },
                        "taken_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the note was taken, with a time zone.",
                        },
                        "note_type": {"type": "string", "enum": NOTE_TYPES},
                    },
                    "additionalProperties": False,
                }
            },
        },
    }
}


async def note_filters(
    note_type: NoteType | None = None,
    taken_after: Annotated[AwareDatetime | None, Query(description="Taken at or after.")] = None,
    taken_before: Annotated[
        AwareDatetime | None, Query(description="Taken strictly before.")
    ] = None,
) -> NoteFilters:
    return NoteFilters(note_type=note_type, taken_after=taken_after, taken_before=taken_before)


Filters = Annotated[NoteFilters, Depends(note_filters)]


@router.post(
    "/patients/{patient_id}/notes",
    status_code=status.HTTP_201_CREATED,
    summary="Add a note: JSON text, or an uploaded text, Markdown, PDF or image file",
    description="The note is split into sections mapped onto SOAP, classified, and mined for "
    "vital signs, medications, diagnoses and allergies. Uploading the same file twice for a "
    "patient gives 409. Scanned files need OCR (Tesseract) on the server; without it they get "
    "422.",
    response_model=NoteRead,
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415),
    openapi_extra=NOTE_REQUEST_BODY,
)
async def create_note(
    session: SessionDep,
    settings: SettingsDep,
    user: CareTeamMember,
    patient_id: PatientId,
    note: NoteInputDep,
    response: Response,
) -> NoteRead:
    created = await handlers.create_note(
        session,
        user,
        settings,
        patient_id,
        taken_at=note.form.taken_at,
        note_type=note.form.note_type,
        content=getattr(note.form, "content", None),
        upload=note.upload,
    )
    response.headers["Location"] = f"/patients/{patient_id}/notes/{created.id}"
    return created


@router.get(
    "/patients/{patient_id}/notes",
    summary="A patient's notes, newest first (clinician, admin)",
    response_model=Page[NoteListItem],
    responses=problem_responses(401, 403, 404),
)
async def list_patient_notes(
    session: SessionDep,
    user: CareTeamMember,
    patient_id: PatientId,
    page: PageDep,
    filters: Filters,
) -> Page[NoteListItem]:
    filters = filters.model_copy(update={"patient_id": patient_id})
    return await handlers.list_notes(session, user, filters, page)


@router.get(
    "/patients/{patient_id}/notes/{note_id}",
    summary="A note with its text, sections and extracted data (clinician, admin)",
    response_model=NoteRead,
    responses=problem_responses(401, 403, 404),
)
async def get_note(session: SessionDep, user: CareTeamMember, note: ValidNote) -> NoteRead:
    return await handlers.read_note(session, user, note)


@router.get(
    "/patients/{patient_id}/notes/{note_id}/file",
    summary="The file the note was uploaded as, unchanged (clinician, admin)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The original file."},
        **problem_responses(401, 403, 404),
    },
)
async def get_note_file(session: SessionDep, user: CareTeamMember, note: ValidNote) -> Response:
    note, data = await handlers.read_file(session, user, note)
    filename = note.file_name or f"note-{note.id}"
    return Response(
        content=data,
        media_type=note.file_media_type,
        headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.delete(
    "/patients/{patient_id}/notes/{note_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a note (clinician, admin); notes are not edited: delete and add again",
    responses=problem_responses(401, 403, 404),
)
async def delete_note(session: SessionDep, user: CareTeamMember, note: ValidNote) -> None:
    await handlers.delete_note(session, user, note)


@router.get(
    "/notes",
    summary="Every patient's notes, newest first (clinician, admin)",
    response_model=Page[NoteListItem],
    responses=problem_responses(401, 403),
)
async def list_notes(
    session: SessionDep,
    user: CareTeamMember,
    page: PageDep,
    filters: Filters,
    patient_id: uuid.UUID | None = None,
) -> Page[NoteListItem]:
    filters = filters.model_copy(update={"patient_id": patient_id})
    return await handlers.list_notes(session, user, filters, page)
