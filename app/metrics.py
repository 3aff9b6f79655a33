"""Prometheus metrics of the HTTP API, recorded by the request middleware, served at /metrics.

Labelled by route template (`/patients/{patient_id}`, never the raw path: bounded cardinality
and no identifiers), method and status class. Probes and scrapes are not counted.
"""

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

UNCOUNTED_ROUTES = frozenset({"/metrics", "/health", "/ready"})
# Any other method a client sends is counted as OTHER: labels must stay a bounded set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template, method and status class (2xx, 4xx, ...).",
    ["handler", "method", "status"],
)
DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to its last response byte, by route template and method.",
    ["handler", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# The labelled children, looked up once per (route, method, status class): on the hot path a
# `labels()` call costs more than the increment it precedes.
_children: dict[tuple[str, str, int], tuple] = {}


def observe(handler: str, method: str, status: int, seconds: float) -> None:
    if handler in UNCOUNTED_ROUTES:
        return
    if method not in KNOWN_METHODS:
        method = "OTHER"
    key = (handler, method, status // 100)
    children = _children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(handler, method, f"{status // 100}xx"),
            DURATION.labels(handler, method),
        )
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
