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

from cosyvoice_otel.settings import current

logger = logging.getLogger("cosyvoice_otel")

IO_SPANS = ["receive", "send"]  # the ASGI middleware's per-message spans


class _OursIsLoaded(logging.Filter):
    """The loader warns about every OTHER configurator it skips because ``OTEL_PYTHON_CONFIGURATOR``
    names ours (the stock ``configurator`` of opentelemetry-distro, at every start): expected,
    so not shown. Any other line of the loader still is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg.startswith("Configuration of ") and "not loaded" in record.msg
                    and "cosyvoice_otel" in tuple(map(str, record.args or ())))


class CosyVoiceDistro(OpenTelemetryDistro):
    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)
        # the loader logs the skipped configurators right after the distro is configured
        logging.getLogger("opentelemetry.instrumentation.auto_instrumentation._load").addFilter(
            _OursIsLoaded())

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name == "fastapi":
            try:
                if not current().http_io_spans:
                    kwargs.setdefault("exclude_spans", IO_SPANS)
            except Exception as exc:  # noqa: BLE001 - loading goes on with the defaults
                logger.warning("cosyvoice-otel: fastapi options not applied (%s)", exc)
        super().load_instrumentor(entry_point, **kwargs)
