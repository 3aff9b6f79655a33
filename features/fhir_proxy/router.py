"""The FHIR proxy's routes: FHIR R4 REST under /fhir, answered as `application/fhir+json`,
errors as OperationOutcome (see outcome.FHIRRoute)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request, Response

from app.clients.fhir import FHIRDep
from app.db import SessionDep
from app.security import CurrentUser, SettingsDep
from features.fhir_proxy import handlers
from features.fhir_proxy.handlers import Call, FHIRAnswer
from features.fhir_proxy.outcome import (
    FHIR_JSON,
    FHIRJSONResponse,
    FHIRRoute,
    fhir_response,
    outcome_response,
)

router = APIRouter(
    prefix="/fhir", tags=["fhir"], route_class=FHIRRoute, default_response_class=FHIRJSONResponse
)

OUTCOME_SCHEMA = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}
RESOURCE_SCHEMA = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}
_ERRORS = {
    400: "Malformed: a type outside FHIR_RESOURCE_TYPES, a bad id or parameter.",
    401: "Missing or invalid credentials.",
    403: "Not allowed to this role (patients: outside what they may do).",
    404: "No such resource, or one the caller may not see.",
    409: "A version conflict on the FHIR server.",
    412: "If-Match did not match the current version.",
    422: "The FHIR server refused the resource; the OperationOutcome says why.",
    503: "The FHIR server cannot be reached, or the account is not linked to a FHIR Patient yet.",
    504: "The FHIR server did not answer in time.",
}


def _documented(*statuses: int, ok: int = 200, ok_description: str = "A FHIR resource.") -> dict:
    responses: dict[int | str, Any] = {
        ok: {"description": ok_description, "content": {FHIR_JSON: {"schema": RESOURCE_SCHEMA}}}
    }
    for status in (400, 401, 403, 503, 504, *statuses):
        responses[status] = {
            "description": _ERRORS[status],
            "content": {FHIR_JSON: {"schema": OUTCOME_SCHEMA}},
        }
    return responses


async def proxied_call(
    request: Request, session: SessionDep, fhir: FHIRDep, user: CurrentUser, settings: SettingsDep
) -> Call:
    user, scope = await handlers.scope_of(session, fhir, user, settings.fhir_resource_types)
    proxy_base = str(request.base_url).rstrip("/") + "/fhir"
    return Call(session, fhir, user, scope, proxy_base, settings.fhir_max_page_size)


ProxiedCall = Annotated[Call, Depends(proxied_call)]
ResourceBody = Annotated[dict[str, Any], Body(media_type=FHIR_JSON)]
IfNoneExist = Annotated[
    str | None,
    Header(description="Conditional create: a search; when it matches, nothing is created."),
]
IfMatch = Annotated[str | None, Header(description='Version-aware update: W/"<versionId>".')]


def _respond(answer: FHIRAnswer) -> Response:
    return fhir_response(answer.status, answer.body, answer.headers)


def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


@router.get(
    "/metadata",
    summary="The FHIR server's CapabilityStatement",
    operation_id="fhir_metadata",
    responses=_documented(ok_description="CapabilityStatement"),
)
async def metadata(call: ProxiedCall) -> Response:
    return _respond(await handlers.metadata(call))


@router.get(
    "",
    summary="The next page of a search the FHIR server keeps (`_getpages`)",
    operation_id="fhir_page",
    responses=_documented(ok_description="A searchset Bundle."),
)
async def next_page(request: Request, call: ProxiedCall) -> Response:
    return _respond(await handlers.page(call, _params(request)))


@router.post(
    "",
    summary="A transaction or batch Bundle (care team only)",
    operation_id="fhir_transaction",
    responses=_documented(ok_description="A transaction-response or batch-response Bundle."),
)
async def transaction(call: ProxiedCall, bundle: ResourceBody) -> Response:
    return _respond(await handlers.bundle(call, bundle))


# --- named operations for Patient and Observation, as the PHR service documented --------------

_NAMED = {
    "Patient": [
        ("identifier", "system|value, e.g. urn:clinical-backend:csv-patient-id|P001"),
        ("family", "Family name (starts with)."),
        ("given", "Given name (starts with)."),
        ("birthdate", "Birth date, with a prefix: eq, lt, ge, ..."),
        ("gender", "male | female | other | unknown"),
        ("_count", "Page size (capped at FHIR_MAX_PAGE_SIZE)."),
    ],
    "Observation": [
        ("patient", "Patient/<id>: the patient the observations are about."),
        ("code", "system|code, e.g. http://loinc.org|29463-7"),
        ("category", "e.g. vital-signs, laboratory"),
        ("date", "Effective date, with a prefix: ge2024-01-01"),
        ("_count", "Page size (capped at FHIR_MAX_PAGE_SIZE)."),
    ],
}
_EXAMPLES = {
    "Patient": {
        "resourceType": "Patient",
        "name": [{"family": "Smith", "given": ["Anna"]}],
        "gender": "female",
        "birthDate": "1980-04-02",
    },
    "Observation": {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2026-01-05T08:30:00Z",
        "valueQuantity": {
            "value": 72,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    },
}


def _add_named_operations(resource_type: str) -> None:
    """Search, read, create and update for one type, each with its own OpenAPI entry."""
    lower = resource_type.lower()
    parameters = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": text,
        }
        for name, text in _NAMED[resource_type]
    ]
    body = Annotated[
        dict[str, Any], Body(media_type=FHIR_JSON, examples=[_EXAMPLES[resource_type]])
    ]

    async def search(request: Request, call: ProxiedCall) -> Response:
        return _respond(await handlers.search(call, resource_type, _params(request)))

    async def read(call: ProxiedCall, id: str) -> Response:
        return _respond(await handlers.read(call, resource_type, id))

    async def create(
        call: ProxiedCall, resource: body, if_none_exist: IfNoneExist = None
    ) -> Response:
        query = handlers.conditional_query(if_none_exist)
        return _respond(await handlers.create(call, resource_type, resource, query))

    async def update(
        call: ProxiedCall, id: str, resource: body, if_match: IfMatch = None
    ) -> Response:
        return _respond(await handlers.update(call, resource_type, id, resource, if_match))

    router.add_api_route(
        f"/{resource_type}",
        search,
        methods=["GET"],
        summary=f"Search {resource_type} resources",
        operation_id=f"search_{lower}",
        responses=_documented(ok_description="A searchset Bundle."),
        openapi_extra={"parameters": parameters},
    )
    router.add_api_route(
        f"/{resource_type}/{{id}}",
        read,
        methods=["GET"],
        summary=f"Read a {resource_type}",
        operation_id=f"read_{lower}",
        responses=_documented(404, ok_description=resource_type),
    )
    router.add_api_route(
        f"/{resource_type}",
        create,
        methods=["POST"],
        status_code=201,
        summary=f"Create a {resource_type}",
        operation_id=f"create_{lower}",
        responses=_documented(422, ok=201, ok_description=f"The {resource_type} created."),
    )
    router.add_api_route(
        f"/{resource_type}/{{id}}",
        update,
        methods=["PUT"],
        summary=f"Update a {resource_type}",
        operation_id=f"update_{lower}",
        responses=_documented(404, 409, 412, 422, ok_description=f"The {resource_type} saved."),
    )


for _type in _NAMED:
    _add_named_operations(_type)


# --- every allowed type ------------------------------------------------------------------------


@router.get(
    "/{resource_type}",
    summary="Search resources of a type",
    operation_id="fhir_search",
    responses=_documented(ok_description="A searchset Bundle."),
)
async def search(request: Request, call: ProxiedCall, resource_type: str) -> Response:
    return _respond(await handlers.search(call, resource_type, _params(request)))


@router.post(
    "/{resource_type}",
    status_code=201,
    summary="Create a resource",
    operation_id="fhir_create",
    responses=_documented(422, ok=201, ok_description="The resource created."),
)
async def create(
    call: ProxiedCall, resource_type: str, resource: ResourceBody, if_none_exist: IfNoneExist = None
) -> Response:
    query = handlers.conditional_query(if_none_exist)
    return _respond(await handlers.create(call, resource_type, resource, query))


@router.get(
    "/Patient/{id}/$everything",
    summary="Everything about a patient (patients: only themselves)",
    operation_id="patient_everything",
    responses=_documented(404, ok_description="A searchset Bundle."),
)
async def everything(request: Request, call: ProxiedCall, id: str) -> Response:
    return _respond(await handlers.everything(call, id, _params(request)))


@router.get(
    "/{resource_type}/{id}",
    summary="Read a resource",
    operation_id="fhir_read",
    responses=_documented(404),
)
async def read(call: ProxiedCall, resource_type: str, id: str) -> Response:
    return _respond(await handlers.read(call, resource_type, id))


@router.put(
    "/{resource_type}/{id}",
    summary="Update a resource",
    operation_id="fhir_update",
    responses=_documented(404, 409, 412, 422),
)
async def update(
    call: ProxiedCall,
    resource_type: str,
    id: str,
    resource: ResourceBody,
    if_match: IfMatch = None,
) -> Response:
    return _respond(await handlers.update(call, resource_type, id, resource, if_match))


@router.delete(
    "/{resource_type}/{id}",
    summary="Delete a resource",
    operation_id="fhir_delete",
    responses=_documented(404, 409, ok_description="Deleted (an OperationOutcome may say more)."),
)
async def delete(call: ProxiedCall, resource_type: str, id: str) -> Response:
    return _respond(await handlers.delete(call, resource_type, id))


@router.get(
    "/{resource_type}/{id}/_history/{version_id}",
    summary="Read one version of a resource",
    operation_id="fhir_vread",
    responses=_documented(404),
)
async def vread(call: ProxiedCall, resource_type: str, id: str, version_id: str) -> Response:
    return _respond(await handlers.vread(call, resource_type, id, version_id))


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def unknown(path: str) -> Response:
    """Anything else under /fhir: never sent to the FHIR server."""
    return outcome_response(404, "this FHIR interaction is not available through this API")
