"""A view's `constant` list: validated, and typed by value[x] so `%name` compares right
(`valueDate` as a date, `valueInteger` as an integer...)."""

from typing import Any

from features.fhir_flatten.engine.viewdef import temporal
from features.fhir_flatten.engine.viewdef.compiler import RESERVED_CONSTANTS
from features.fhir_flatten.engine.viewdef.errors import ViewError
from features.fhir_flatten.engine.viewdef.shape import ELEMENT_KEYS, NAME, as_list

_TEXT_CONSTANTS = {
    "valueBase64Binary", "valueCanonical", "valueCode", "valueId", "valueMarkdown",
    "valueOid", "valueString", "valueUri", "valueUrl", "valueUuid",
}  # fmt: skip
_TEMPORAL_CONSTANTS = {
    "valueDate": temporal.FhirDate,
    "valueDateTime": temporal.FhirDateTime,
    "valueInstant": temporal.FhirDateTime,
    "valueTime": temporal.FhirTime,
}
_INTEGER_CONSTANTS = {"valueInteger": None, "valuePositiveInt": 1, "valueUnsignedInt": 0}


def _constant_value(key: str, value: Any, location: str) -> Any:
    if key in _TEXT_CONSTANTS and isinstance(value, str):
        return value
    if key in _TEMPORAL_CONSTANTS and isinstance(value, str):
        kind = _TEMPORAL_CONSTANTS[key]
        if temporal.parse(value, kind) is None:
            raise ViewError(f"{value!r:.60} is not a valid {key[5:]}", location)
        return kind(value)
    if key == "valueBoolean" and value.__class__ is bool:
        return value
    if key == "valueDecimal" and value.__class__ in (int, float):
        return value
    if key in _INTEGER_CONSTANTS and value.__class__ is int:
        least = _INTEGER_CONSTANTS[key]
        if least is not None and value < least:
            raise ViewError(f"{value} is not a valid {key[5:]}", location)
        return value
    if key == "valueInteger64" and (value.__class__ is int or isinstance(value, str)):
        try:
            return int(value)
        except ValueError:
            pass
    known = _TEXT_CONSTANTS | set(_TEMPORAL_CONSTANTS) | set(_INTEGER_CONSTANTS)
    if key in known | {"valueBoolean", "valueDecimal", "valueInteger64"}:
        raise ViewError(f"{value!r:.60} is not a valid {key[5:]}", location)
    raise ViewError(f"constants of type {key[5:]} are not supported", location)


def parse_constants(declared: Any) -> dict[str, list]:
    constants: dict[str, list] = {}
    for i, constant in enumerate(as_list(declared, "constant")):
        location = f"constant[{i}]"
        if not isinstance(constant, dict):
            raise ViewError("a constant must be a JSON object", location)
        name = constant.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ViewError(f"{name!r:.60} is not a valid constant name", location + ".name")
        if name in constants or name in RESERVED_CONSTANTS:
            what = "is defined twice" if name in constants else "is reserved by FHIRPath"
            raise ViewError(f"constant %{name} {what}", location + ".name")
        values = [key for key in constant if key.startswith("value")]
        if len(values) != 1:
            raise ViewError(
                f"constant %{name} needs exactly one value[x] (valueString, valueInteger, ...), "
                f"found {len(values)}",
                location,
            )
        unknown = set(constant) - {"name", values[0]} - ELEMENT_KEYS
        if unknown:
            raise ViewError(f"unknown key(s) {sorted(unknown)} in a constant", location)
        key = values[0]
        constants[name] = [_constant_value(key, constant[key], f"{location}.{key}")]
    return constants
