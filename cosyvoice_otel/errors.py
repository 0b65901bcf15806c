"""Tracing code never raises into the app: a failure is contained, counted and logged once.

``note_error(where, exc)`` is what every wrapper and extractor calls in its ``except``; the
count per place is ``ERRORS`` (the tracer-health metric ``cosyvoice_otel.tracing.errors``
reads it), and the first failure per place is one warning line.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("cosyvoice_otel")

ERRORS: Counter[str] = Counter()
_LOGGED: set[str] = set()


def note_error(where: str, exc: BaseException) -> None:
    """Count a failure of tracing code; log it the first time per place."""
    ERRORS[where] += 1
    if where not in _LOGGED:
        _LOGGED.add(where)
        logger.warning("cosyvoice-otel: tracing error in %s (%s: %s); the app is unaffected",
                       where, type(exc).__name__, exc)
