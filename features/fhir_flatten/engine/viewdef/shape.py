"""Checks of the JSON shape of a view: lists, objects, their keys, names."""

import re
from typing import Any

from features.fhir_flatten.engine.viewdef.errors import ViewError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
ELEMENT_KEYS = {"id", "extension", "modifierExtension"}  # allowed on any FHIR element


def as_list(value: Any, location: str, required: bool = False) -> list:
    if value is None:
        if required:
            raise ViewError("is required and must be a non-empty list", location)
        return []
    if not isinstance(value, list) or (required and not value):
        raise ViewError("must be a non-empty list" if required else "must be a list", location)
    return value


def as_object(value: Any, location: str, allowed: set[str], what: str) -> dict:
    if not isinstance(value, dict):
        raise ViewError(f"{what} must be a JSON object", location)
    unknown = sorted(set(value) - allowed - ELEMENT_KEYS)
    if unknown:
        raise ViewError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {what}; "
            f"expected {', '.join(sorted(allowed))}",
            location,
        )
    return value
