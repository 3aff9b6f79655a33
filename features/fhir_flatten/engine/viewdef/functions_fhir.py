"""Functions SQL-on-FHIR adds to FHIRPath or relies on: extension(), getResourceKey(),
getReferenceKey(), lowBoundary() and highBoundary()."""

import re

from features.fhir_flatten.engine.viewdef import operators
from features.fhir_flatten.engine.viewdef.boundary import boundary
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.functions import integer_argument, with_arguments
from features.fhir_flatten.engine.viewdef.registry import ITEMS, register_functions


def _extension(items: list, url: list) -> list:
    wanted = operators.singleton(url, "extension()")
    if wanted is None:
        return []
    out = []
    for item in items:
        if item.__class__ is dict:
            for extension in item.get("extension") or ():
                if extension.__class__ is dict and extension.get("url") == wanted:
                    out.append(extension)
    return out


def _resource_key(items: list) -> list:
    return [
        item["id"]
        for item in items
        if item.__class__ is dict and "resourceType" in item and item.get("id") is not None
    ]


# Type/id at the end of a relative or absolute reference, before any /_history/version.
_TYPED_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_URN = re.compile(r"urn:(?:uuid|oid):(.+)")


def reference_key(reference: dict, wanted_type: str | None) -> str | None:
    """The id a Reference points to, if its type is `wanted_type` (or it cannot tell).

    `Patient/123`, `http://server/fhir/Patient/123/_history/2` -> 123; `urn:uuid:abc` (bundle
    references, as Synthea writes them) -> abc, checked against the Reference's own `type`
    when it has one. Contained (`#x`) and conditional (`Patient?identifier=...`) references
    have no key.
    """
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    match = _TYPED_REFERENCE.search(text)
    if match is not None:
        kind, key = match.groups()
    else:
        urn = _URN.fullmatch(text)
        if urn is None:
            return None
        kind, key = reference.get("type"), urn.group(1)
    if wanted_type is not None and kind is not None and kind != wanted_type:
        return None
    return key


def _reference_key_factory(compiler, node):
    wanted = None
    if node.args:
        argument = node.args[0]
        if argument.kind == "literal" and len(argument.value) == 1:
            wanted = argument.value[0]
        else:
            wanted = compiler.type_argument(argument, node)
        if not isinstance(wanted, str):
            raise compiler.error("getReferenceKey() expects a resource type", argument)

    def impl(items: list) -> list:
        out = []
        for item in items:
            if item.__class__ is dict:
                key = reference_key(item, wanted)
                if key is not None:
                    out.append(key)
        return out

    return impl, ITEMS


def _boundary(high: bool):
    name = "highBoundary" if high else "lowBoundary"

    def bound(items: list, precision: list | None = None) -> list:
        value = operators.singleton(items, f"{name}()")
        if value is None:
            return []
        digits = None if precision is None else integer_argument(precision, name)
        if precision is not None and digits is None:
            return []
        try:
            result = boundary(value, digits, high)
        except (ValueError, ArithmeticError) as exc:
            raise ViewError(f"{name}() cannot bound {value!r:.40}: {exc}") from None
        return [] if result is None else [result]

    return bound


FHIR = {
    "extension": (1, 1, with_arguments(_extension)),
    "getResourceKey": (0, 0, with_arguments(_resource_key)),
    "getReferenceKey": (0, 1, _reference_key_factory),
    "lowBoundary": (0, 1, with_arguments(_boundary(False))),
    "highBoundary": (0, 1, with_arguments(_boundary(True))),
}

register_functions(FHIR)
