"""FHIR type names without a model: what `ofType(T)` can tell from JSON values alone.

A choice element is stored under its name plus the type (`valueQuantity`), so
`value.ofType(Quantity)` is compiled into a read of that key. Anywhere else a type can only be
guessed from the JSON value (a string, a number, an object), which these predicates do.
"""

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from features.fhir_flatten.engine.viewdef import temporal
from features.fhir_flatten.engine.viewdef.parser import Quantity

_PRIMITIVES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
        "instant", "integer", "integer64", "markdown", "oid", "positiveInt", "string", "time",
        "unsignedInt", "uri", "url", "uuid", "xhtml",
    }
)  # fmt: skip
_COMPLEX = frozenset(
    {
        "Address", "Age", "Annotation", "Attachment", "Availability", "CodeableConcept",
        "CodeableReference", "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count",
        "DataRequirement", "Distance", "Dosage", "Duration", "Expression",
        "ExtendedContactDetail", "HumanName", "Identifier", "Meta", "Money",
        "MonetaryComponent", "ParameterDefinition", "Period", "Quantity", "Range", "Ratio",
        "RatioRange", "Reference", "RelatedArtifact", "SampledData", "Signature", "Timing",
        "TriggerDefinition", "UsageContext", "VirtualServiceDetail",
    }
)  # fmt: skip

# The endings a choice element's key can have: valueQuantity, deceasedBoolean, onsetDateTime...
CHOICE_SUFFIXES = frozenset(t[0].upper() + t[1:] for t in _PRIMITIVES) | _COMPLEX

_SYSTEM = {
    "String": "string",
    "Integer": "integer",
    "Decimal": "decimal",
    "Boolean": "boolean",
    "Date": "date",
    "DateTime": "dateTime",
    "Time": "time",
    "Quantity": "Quantity",
    "Long": "integer64",
}
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_STRINGS = {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown"}
_STRINGS |= {"base64Binary", "xhtml"}
_INTEGERS = {"integer", "positiveInt", "unsignedInt", "integer64"}
TEMPORAL_TYPES = {
    "date": temporal.FhirDate,
    "dateTime": temporal.FhirDateTime,
    "instant": temporal.FhirDateTime,
    "time": temporal.FhirTime,
}


def canonical(name: str) -> str | None:
    """`FHIR.Quantity` -> `Quantity`, `System.String` -> `string`; None if not a type name."""
    if name.startswith("FHIR."):
        name = name[5:]
    elif name.startswith("System."):
        name = _SYSTEM.get(name[7:], "")
    return name if _TYPE_NAME.fullmatch(name) else None


def choice_key(name: str, type_name: str) -> str:
    return name + type_name[0].upper() + type_name[1:]


def choice_value(item: dict, name: str) -> Any:
    """The value of choice element `name` whatever its type (`value` -> `valueString`)."""
    size = len(name)
    for key in item:
        if key.startswith(name) and key[size:] in CHOICE_SUFFIXES:
            return item[key]
    return None


def _is_integer(value: Any) -> bool:
    return value.__class__ is int


def _is_decimal(value: Any) -> bool:
    return value.__class__ in (int, float, Decimal)


def _is_boolean(value: Any) -> bool:
    return value.__class__ is bool


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _temporal_check(kind: type) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if value.__class__ in temporal.TYPED:
            return value.__class__ is kind or (
                kind is temporal.FhirDateTime and value.__class__ is temporal.FhirDate
            )
        if not isinstance(value, str):
            return False
        parsed = temporal.parse(value, kind)
        return parsed is not None and (kind is not temporal.FhirDate or not parsed.has_time)

    return check


def _complex_check(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, Quantity):
            return name == "Quantity"
        if value.__class__ is not dict:
            return False
        resource_type = value.get("resourceType")
        return resource_type is None or resource_type == name

    return check


def predicate(type_name: str) -> Callable[[Any], bool]:
    """Whether a JSON value can be of `type_name` (a canonical name)."""
    if type_name in _INTEGERS:
        return _is_integer
    if type_name == "decimal":
        return _is_decimal
    if type_name == "boolean":
        return _is_boolean
    if type_name in TEMPORAL_TYPES:
        return _temporal_check(TEMPORAL_TYPES[type_name])
    if type_name in _STRINGS:
        return _is_string
    if type_name[0].isupper():
        return _complex_check(type_name)
    return lambda value: False


def wrapper(type_name: str) -> Callable[[Any], Any] | None:
    """Marks string values of a temporal type, so they compare and bound as that type."""
    kind = TEMPORAL_TYPES.get(type_name)
    if kind is None:
        return None

    def wrap(value: Any) -> Any:
        return kind(value) if value.__class__ is str else value

    return wrap
