"""Stage spans for the CosyVoice pipeline and the Gradio queue bridge (what gets traced).

Light on purpose: the launcher imports ``stage_map`` to check ``--stage`` rows, and must not pay
for the instrumentor. The room:

* ``instrumentor.py``: ``CosyVoiceInstrumentor`` (entry point ``opentelemetry_instrumentor:
  cosyvoice``): lazy, idempotent, reversible patching of the stage map's targets;
* ``stage_map.py``: WHAT to trace, as data (class rows and role rows);
* ``stage_span.py``: the span wrappers (plain calls and generators, never raising);
* ``extractors.py``: sizes, counts and durations read from each stage's call;
* ``gradio_bridge.py``: one trace per Gradio event, from the request that queued it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CosyVoiceInstrumentor", "ERRORS"]


def __getattr__(name: str) -> Any:
    if name == "CosyVoiceInstrumentor":
        from .instrumentor import CosyVoiceInstrumentor

        return CosyVoiceInstrumentor
    if name == "ERRORS":
        from .stage_span import ERRORS

        return ERRORS
    raise AttributeError(name)
