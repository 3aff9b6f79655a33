"""SQL-on-FHIR v2 ViewDefinitions: validate and compile a view once, then flatten resources
into rows with it (`compile_view(view).rows(resource)`)."""

from features.fhir_flatten.viewdef.errors import FhirPathError, ViewError
from features.fhir_flatten.viewdef.view import Column, CompiledView, compile_view

__all__ = ["Column", "CompiledView", "FhirPathError", "ViewError", "compile_view"]
