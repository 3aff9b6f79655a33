"""The flatten engine: SQL-on-FHIR v2 ViewDefinitions and FHIRPath (`viewdef`), and the readers
of FHIR input (`sources`, on `jsonstream`).

It needs no database and no web framework, and nothing else of the feature: it imports only
the standard library and orjson, so it could be published on its own.
"""
