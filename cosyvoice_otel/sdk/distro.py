"""The ``opentelemetry_distro`` entry point: how the other instrumentations are loaded.

``opentelemetry-instrument`` asks the distro named by ``OTEL_PYTHON_DISTRO`` (the launcher sets
``cosyvoice_otel``) to load each instrumentor; that is the documented place to pass them options
that have no environment variable. Ours is the standard distro plus one such option: the FastAPI
instrumentation gets ``exclude_spans=["receive", "send"]`` unless ``--http-io-spans``: otherwise
every streamed audio chunk (a StreamingResponse body, a Gradio SSE message) is a span of its own,
the largest share of a streamed trace's spans and export cost, and never what an operator asks.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.distro import OpenTelemetryDistro

logger = logging.getLogger("cosyvoice_otel")

IO_SPANS = ["receive", "send"]  # the ASGI middleware's per-message spans


class CosyVoiceDistro(OpenTelemetryDistro):
    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name == "fastapi":
            try:
                from cosyvoice_otel.launcher.config import runtime_settings

                if not runtime_settings().http_io_spans:
                    kwargs.setdefault("exclude_spans", IO_SPANS)
            except Exception as exc:  # noqa: BLE001 - loading goes on with the defaults
                logger.warning("cosyvoice-otel: fastapi options not applied (%s)", exc)
        super().load_instrumentor(entry_point, **kwargs)
