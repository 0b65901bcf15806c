"""Stage spans for the CosyVoice pipeline and the Gradio queue bridge (what gets traced).

Light on purpose (importing the package imports nothing else). The room:

* ``instrumentor.py``: ``CosyVoiceInstrumentor`` (entry point ``opentelemetry_instrumentor:
  cosyvoice``): lazy, idempotent, reversible patching of the stage map's targets and of the
  ``PATCHES`` table (Gradio bridge, streamed-response scope, routes' query names);
* ``stage_map.py``: WHAT to trace, as data (class rows and role rows; a row's shape is
  ``cosyvoice_otel.stage_rows``);
* ``stage_span.py``: the span wrappers (plain calls and generators, never raising) and the
  ``Extractor`` base; ``extractors.py``: sizes, counts and durations read from each call;
* ``options.py``: what the wrappers read, resolved once; ``errors.py``: contained, counted
  tracing errors; ``gpu_timing.py``: CUDA-event stage time, resolved off the request path;
  ``metrics.py``: the TTS metrics recorded where stages end;
* ``gradio_bridge.py``: one trace per Gradio event; ``stream_scope.py``: a streamed response
  ends what its client abandoned; ``routes.py``: the query names routes declare.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CosyVoiceInstrumentor", "ERRORS"]


def __getattr__(name: str) -> Any:
    if name == "CosyVoiceInstrumentor":
        from .instrumentor import CosyVoiceInstrumentor

        return CosyVoiceInstrumentor
    if name == "ERRORS":
        from cosyvoice_otel.errors import ERRORS

        return ERRORS
    raise AttributeError(name)
