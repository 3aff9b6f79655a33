"""Who may do what through the FHIR proxy: pure functions over requests and resources.

Admins and clinicians use the allowed resource types freely. A patient-role user sees only
their own compartment: their Patient, and resources whose `subject`/`patient` is that Patient.
The rules are checked twice, fail-closed: searches are narrowed before they are sent, and every
resource in every answer is checked again before it is returned, so a parameter the rules did
not foresee (an `_include` path, an `_elements` that drops `subject`) can only hide data, never
show someone else's.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.security import Principal, Role

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
TYPE_PATTERN = re.compile(r"[A-Z][A-Za-z]{1,63}")
# A search parameter name, with a modifier or chain; anything else is refused before it is sent.
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.:]{0,127}")
CARE_TEAM = frozenset({Role.ADMIN, Role.CLINICIAN})
# The elements that tie a resource to its patient, for the types a patient may see.
PATIENT_REFERENCES = ("subject", "patient")
# Search parameters a patient may not use: they reach across compartments or search everything.
PATIENT_REFUSED_PARAMS = frozenset(
    {
        "_has",
        "_type",
        "_filter",
        "_query",
        "_list",
        "_contained",
        "_containedType",
        "_text",
        "_content",
    }
)
# Types a patient may create (about themselves) and update (their own).
PATIENT_CREATABLE = frozenset({"Observation"})
PATIENT_UPDATABLE = frozenset({"Patient", "Observation"})
# Paging through a search the FHIR server keeps (HAPI answers `next` as `[base]?_getpages=...`).
PAGING_PARAMS = frozenset({"_getpages", "_getpagesoffset", "_count", "_bundletype", "_pretty"})
DROPPED_PARAMS = frozenset({"_format"})  # the proxy always speaks JSON
EVERYTHING_PARAMS = frozenset({"_count", "_since", "start", "end", "_type"})


class AccessRefused(Exception):
    """The request is not allowed. `hidden` means: answer 404, as if nothing were there."""

    def __init__(self, reason: str, *, hidden: bool = False, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hidden = hidden
        self.status = 404 if hidden else status


class InvalidRequest(Exception):
    """The request is malformed (400): an unknown type, a bad id, a bad parameter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Scope:
    """What one caller may reach: everything of the allowed types, or one compartment."""

    allowed_types: frozenset[str]
    patient_id: str | None = None  # set for patient-role users: their own FHIR Patient id

    @property
    def is_patient(self) -> bool:
        return self.patient_id is not None

    @property
    def own_reference(self) -> str:
        return f"Patient/{self.patient_id}"


def scope_for(user: Principal, allowed_types: Iterable[str]) -> Scope:
    """The caller's scope; raises AccessRefused for roles without FHIR access."""
    allowed = frozenset(allowed_types)
    if user.role in CARE_TEAM:
        return Scope(allowed)
    if user.role is Role.PATIENT:
        if not user.fhir_patient_id:
            raise AccessRefused("not linked", status=503)
        return Scope(allowed, patient_id=user.fhir_patient_id)
    raise AccessRefused(f"the FHIR API is not open to the {user.role} role")


def check_type(scope: Scope, resource_type: str) -> None:
    if not TYPE_PATTERN.fullmatch(resource_type) or resource_type not in scope.allowed_types:
        raise InvalidRequest(f"resource type {resource_type!r} is not available through this API")


def check_id(resource_id: str, what: str = "id") -> None:
    if not ID_PATTERN.fullmatch(resource_id):
        raise InvalidRequest(f"{what} must be 1-64 letters, digits, '-' or '.'")
    if resource_id in (".", ".."):
        raise InvalidRequest(f"{what} must be 1-64 letters, digits, '-' or '.'")


# --- compartment membership --------------------------------------------------------------


def _points_to(reference: Any, patient_id: str, backend_base: str | None) -> bool:
    if not isinstance(reference, dict):
        return False
    value = reference.get("reference")
    if not isinstance(value, str):
        return False
    if backend_base and value.startswith(backend_base + "/"):
        value = value[len(backend_base) + 1 :]
    value = re.sub(r"/_history/[^/]+$", "", value)
    return value == f"Patient/{patient_id}"


def in_compartment(resource: Any, patient_id: str, backend_base: str | None = None) -> bool:
    """True when the resource is the Patient itself, or every patient reference it has
    (`subject`, `patient`) points at that Patient and it has at least one."""
    if not isinstance(resource, dict):
        return False
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    references = [resource[name] for name in PATIENT_REFERENCES if name in resource]
    return bool(references) and all(
        _points_to(reference, patient_id, backend_base) for reference in references
    )


def filter_bundle(bundle: dict[str, Any], scope: Scope, backend_base: str | None = None) -> int:
    """Drop, in place, every entry a patient may not see; return how many were dropped."""
    if not scope.is_patient or not isinstance(bundle.get("entry"), list):
        return 0
    kept = [
        entry
        for entry in bundle["entry"]
        if isinstance(entry, dict)
        and in_compartment(entry.get("resource"), scope.patient_id, backend_base)
        and (entry["resource"].get("resourceType") in scope.allowed_types)
    ]
    dropped = len(bundle["entry"]) - len(kept)
    bundle["entry"] = kept
    return dropped


# --- searches ----------------------------------------------------------------------------


def search_params(
    scope: Scope, resource_type: str, params: Sequence[tuple[str, str]], max_count: int
) -> list[tuple[str, str]]:
    """The parameters to send: checked, `_count` capped, and narrowed for a patient."""
    sent: list[tuple[str, str]] = []
    for name, value in params:
        if not PARAM_NAME.fullmatch(name):
            raise InvalidRequest(f"{name[:40]!r} is not a search parameter name")
        if name in DROPPED_PARAMS:
            continue
        if scope.is_patient:
            _check_patient_param(name)
        if name == "_count":
            sent.append((name, str(_capped_count(value, max_count))))
            continue
        sent.append((name, value))
    if scope.is_patient:
        if resource_type == "Patient":
            sent.append(("_id", scope.patient_id))
        else:
            sent.append(("patient", scope.own_reference))
    return sent


def paging_params(
    scope: Scope, params: Sequence[tuple[str, str]], max_count: int
) -> list[tuple[str, str]]:
    """`GET [base]?_getpages=...`: the next page of a search the server keeps, nothing else."""
    names = {name for name, _ in params}
    if "_getpages" not in names or not names <= PAGING_PARAMS | DROPPED_PARAMS:
        raise InvalidRequest("only paging through a search ('_getpages') is allowed here")
    return [
        (name, str(_capped_count(value, max_count)) if name == "_count" else value)
        for name, value in params
        if name not in DROPPED_PARAMS
    ]


def everything_params(params: Sequence[tuple[str, str]], max_count: int) -> list[tuple[str, str]]:
    """`Patient/{id}/$everything`: its own few parameters, `_count` capped. (Its answer is
    filtered like a search's, so `_type` there only narrows.)"""
    sent = []
    for name, value in params:
        if name in DROPPED_PARAMS:
            continue
        if name not in EVERYTHING_PARAMS:
            raise InvalidRequest(f"{name[:40]!r} is not a parameter of $everything")
        sent.append((name, str(_capped_count(value, max_count)) if name == "_count" else value))
    return sent


def _check_patient_param(name: str) -> None:
    base = name.split(":", 1)[0]
    if base in PATIENT_REFUSED_PARAMS:
        raise AccessRefused(f"the search parameter {base!r} is not available to patients")
    # `subject.name=x`, `patient:Patient.name=x`: chains search other resources.
    if "." in name:
        raise AccessRefused("chained search parameters are not available to patients")


def _capped_count(value: str, max_count: int) -> int:
    try:
        count = int(value)
    except ValueError:
        raise InvalidRequest("_count must be a whole number") from None
    return max(0, min(count, max_count))


# --- reads and writes --------------------------------------------------------------------


def check_visible(scope: Scope, resource: Any, backend_base: str | None = None) -> None:
    if scope.is_patient and not in_compartment(resource, scope.patient_id, backend_base):
        raise AccessRefused("not in the caller's compartment", hidden=True)


def check_everything(scope: Scope, resource_type: str, resource_id: str) -> None:
    if resource_type != "Patient":
        raise InvalidRequest("$everything is a Patient operation")
    if scope.is_patient and resource_id != scope.patient_id:
        raise AccessRefused("$everything on another patient", hidden=True)


def check_body(resource_type: str, resource: Any, resource_id: str | None = None) -> None:
    if not isinstance(resource, dict):
        raise InvalidRequest("the body must be a FHIR resource (a JSON object)")
    if resource.get("resourceType") != resource_type:
        raise InvalidRequest(f"the body's resourceType must be {resource_type!r}")
    if resource_id is not None and resource.get("id") != resource_id:
        raise InvalidRequest("the body's id must match the id in the URL")


def check_create(scope: Scope, resource_type: str, resource: dict[str, Any]) -> None:
    if not scope.is_patient:
        return
    if resource_type not in PATIENT_CREATABLE:
        raise AccessRefused(f"patients may not create {resource_type} resources")
    if not in_compartment(resource, scope.patient_id):
        raise AccessRefused("patients may only create resources about themselves")


def check_update(
    scope: Scope, resource_type: str, current: dict[str, Any] | None, resource: dict[str, Any]
) -> None:
    """A patient updates their own Patient or their own resources, never moving one to
    another subject. `current` is the stored resource (None: there is none)."""
    if not scope.is_patient:
        return
    if current is None or not in_compartment(current, scope.patient_id):
        raise AccessRefused("not in the caller's compartment", hidden=True)
    if resource_type not in PATIENT_UPDATABLE:
        raise AccessRefused(f"patients may not update {resource_type} resources")
    if not in_compartment(resource, scope.patient_id):
        raise AccessRefused("a resource may not be moved to another patient")


def check_delete(scope: Scope, current: dict[str, Any] | None) -> None:
    if not scope.is_patient:
        return
    if current is None or not in_compartment(current, scope.patient_id):
        raise AccessRefused("not in the caller's compartment", hidden=True)
    raise AccessRefused("patients may not delete resources")


def check_bundle(scope: Scope, bundle: Any) -> None:
    """A transaction or batch: care team only, every entry on an allowed type."""
    if scope.is_patient:
        raise AccessRefused("transactions and batches are not available to patients")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("the body must be a Bundle")
    if bundle.get("type") not in ("transaction", "batch"):
        raise InvalidRequest("the Bundle's type must be 'transaction' or 'batch'")
    for index, entry in enumerate(bundle.get("entry") or []):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            raise InvalidRequest(f"entry {index} has no request.url")
        path = request["url"].split("?", 1)[0]
        if "://" in path or path.startswith("/"):
            raise InvalidRequest(f"entry {index}: request.url must be relative, as Type/id")
        parts = path.split("/")
        try:
            check_type(scope, parts[0])
            if len(parts) > 2:
                raise InvalidRequest("only Type or Type/id")
            if len(parts) == 2:
                check_id(parts[1])
        except InvalidRequest as exc:
            raise InvalidRequest(f"entry {index}: {exc.reason}") from None
