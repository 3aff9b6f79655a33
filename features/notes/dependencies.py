import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.config import Settings
from app.db import SessionDep
from app.errors import PayloadTooLarge, UnprocessableContent, UnsupportedMediaType
from app.security import SettingsDep
from features.notes import handlers
from features.notes.models import Note
from features.notes.schemas import NoteCreate, NoteUploadForm
from features.patients import dependencies as patients_dependencies
from features.patients import handlers as patients

CareTeamMember = patients_dependencies.CareTeamMember


async def existing_patient_id(
    session: SessionDep, user: CareTeamMember, patient_id: uuid.UUID
) -> uuid.UUID:
    await patients.get_patient(session, user, patient_id, audited_action="note.access")
    return patient_id


PatientId = Annotated[uuid.UUID, Depends(existing_patient_id)]


async def valid_note(
    session: SessionDep, user: CareTeamMember, patient_id: PatientId, note_id: uuid.UUID
) -> Note:
    return await handlers.get_note(session, user, patient_id, note_id, audited_action="note.read")


ValidNote = Annotated[Note, Depends(valid_note)]


@dataclass(frozen=True, slots=True)
class NoteInput:
    """What a POST carried, whichever way it came."""

    form: NoteCreate | NoteUploadForm
    upload: handlers.Upload | None = None


def _invalid(exc: ValidationError, prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    return RequestValidationError(
        [{**error, "loc": (*prefix, *error["loc"])} for error in exc.errors(include_url=False)]
    )


async def _json_note(request: Request) -> NoteInput:
    body = await request.body()
    try:
        return NoteInput(form=NoteCreate.model_validate_json(body))
    except ValidationError as exc:
        raise _invalid(exc) from exc


async def _uploaded_note(request: Request, settings: Settings) -> NoteInput:
    # The body itself is capped while it streams in (BodySizeLimitMiddleware); the form parser
    # spools the file to disk past 1 MB.
    async with request.form(max_files=1, max_fields=4) as form:
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UnprocessableContent(
                "Send the note as the multipart field 'file'.",
                errors=[{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}],
            )
        unknown = set(fields) - set(NoteUploadForm.model_fields)
        if unknown:
            raise UnprocessableContent(
                f"Unknown form fields: {', '.join(sorted(unknown))}.",
                errors=[
                    {
                        "loc": ["body", name],
                        "msg": "Extra inputs are not permitted",
                        "type": "extra_forbidden",
                    }
                    for name in sorted(unknown)
                ],
            )
        try:
            form_model = NoteUploadForm.model_validate(fields)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        if file.size is not None and file.size > settings.note_max_bytes:
            raise PayloadTooLarge(
                f"The file is larger than the limit of {settings.note_max_bytes} bytes."
            )
        data = await file.read(settings.note_max_bytes + 1)
        if len(data) > settings.note_max_bytes:
            raise PayloadTooLarge(
                f"The file is larger than the limit of {settings.note_max_bytes} bytes."
            )
        upload = handlers.Upload(data=data, filename=file.filename, content_type=file.content_type)
    return NoteInput(form=form_model, upload=upload)


async def note_input(request: Request, settings: SettingsDep) -> NoteInput:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return await _json_note(request)
    if content_type == "multipart/form-data":
        return await _uploaded_note(request, settings)
    raise UnsupportedMediaType(
        f"Send the note as application/json ({{taken_at, content, note_type?}}) or as "
        f"multipart/form-data (file, taken_at, note_type?), not {content_type or 'no type'}."
    )


NoteInputDep = Annotated[NoteInput, Depends(note_input)]
