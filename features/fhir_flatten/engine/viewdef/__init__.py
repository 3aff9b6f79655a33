"""SQL-on-FHIR v2 ViewDefinitions: validate and compile a view once, then flatten resources
into rows with it (`compile_view(view).rows(resource)`)."""

# The function modules fill the compiler's function table as they are imported (registry.py).
from features.fhir_flatten.engine.viewdef import (  # noqa: F401
    functions,
    functions_fhir,
    functions_text,
    functions_types,
)
from features.fhir_flatten.engine.viewdef.errors import FhirPathError, ViewError
from features.fhir_flatten.engine.viewdef.view import Column, CompiledView, compile_view

__all__ = ["Column", "CompiledView", "FhirPathError", "ViewError", "compile_view"]
