"""Process-wide settings every entry point applies once it has started up."""

import gc


def freeze_startup_objects() -> None:
    """Take what is loaded by now (modules, routes, models, compiled views) out of the garbage
    collector's full passes: it lives as long as the process, and every full pass would walk
    it again. Each such pass stalled a request for ~100 ms, and they took a quarter of the CPU
    time of a large FHIR load. Call it once, when start-up is done."""
    gc.collect()
    gc.freeze()
