"""The patient registry: demographics, fuzzy name search, optimistic concurrency."""
