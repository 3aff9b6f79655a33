"""The flatten feature's storage: its SQLAlchemy models, the views' tables, loading FHIR input
into them, and the worker processes that prepare a load. It builds on the engine and is used by
the feature's handlers."""
