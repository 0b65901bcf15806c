"""SDK setup for the traced process: the ``opentelemetry_configurator`` entry point.

``opentelemetry-instrument`` runs the configurator named by ``OTEL_PYTHON_CONFIGURATOR``
(the launcher sets ``cosyvoice_otel``). Ours is the SDK's own configurator (exporters, sampler,
id generator and resource from the ``OTEL_*`` variables, as usual) with two additions:

* every exporter it creates, whatever it is (Zipkin, OTLP, the Zipkin file, console, one
  added later), sits behind ``RedactingSpanExporter``: no exporter can skip redaction;
* with ``cosyvoice_ratio`` at a rate below 1 and keep-errors on, an ``ErrorKeepingProcessor``
  per exporter (sharing it) exports the failed traces that the ratio dropped.

A failure here is one warning and an app without tracing, never a crashed app.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from cosyvoice_otel.launcher.config import runtime_settings
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

logger = logging.getLogger("cosyvoice_otel")


class CosyVoiceConfigurator(_OTelSDKConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        exporters: list[RedactingSpanExporter] = []
        try:  # the option table, resolved once for the whole SDK setup
            settings = runtime_settings()
            kwargs.setdefault("exporter_args_map", exporter_args(settings))
            if os.environ.get("OTEL_TRACES_SAMPLER") == "cosyvoice_ratio":
                from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

                kwargs.setdefault("sampler", DeferAwareRatioSampler(
                    settings.sampling_rate, keep_errors=settings.keep_errors))
        except Exception as exc:  # noqa: BLE001 - tracing setup must never stop the app
            logger.warning("cosyvoice-otel: tracing is off: settings unreadable (%s: %s)",
                           type(exc).__name__, exc)
            return
        keep_user_agent = settings.user_agent

        def export_processor(exporter: SpanExporter) -> BatchSpanProcessor:
            redacting = RedactingSpanExporter(exporter, keep_user_agent=keep_user_agent)
            exporters.append(redacting)
            return BatchSpanProcessor(redacting)

        kwargs.setdefault("export_span_processor", export_processor)
        try:
            super()._configure(**kwargs)
        except Exception as exc:  # noqa: BLE001 - tracing setup must never stop the app
            logger.warning("cosyvoice-otel: tracing is off: the OpenTelemetry SDK could not be "
                           "set up (%s: %s)", type(exc).__name__, exc)
            return
        try:
            add_error_keeping(trace.get_tracer_provider(), exporters)
        except Exception as exc:  # noqa: BLE001
            logger.warning("cosyvoice-otel: keep-errors is off (%s: %s)", type(exc).__name__, exc)


def exporter_args(settings: Any) -> dict[type, dict[str, Any]]:
    """Our exporters' constructor arguments, from the settings (the SDK builds exporters by
    class; this map is its way to pass them arguments)."""
    from cosyvoice_otel.sdk.exporter import ResilientZipkinExporter
    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter

    return {ResilientZipkinExporter: {"endpoint": settings.zipkin_endpoint,
                                      "timeout": float(settings.export_timeout),
                                      "spool_dir": settings.spool_root,
                                      "spool_max_bytes": int(settings.spool_max_mb * 1024 * 1024)},
            ZipkinFileExporter: {"path": settings.zipkin_file}}


def add_error_keeping(provider: Any, exporters: list[RedactingSpanExporter]) -> None:
    """Keep failed traces that the ratio dropped (keep_errors.py), when the sampler records
    them (``cosyvoice_ratio`` with keep-errors and a rate below 1)."""
    from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
    from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

    sampler = getattr(provider, "sampler", None)
    if not isinstance(sampler, DeferAwareRatioSampler) or not sampler.records_drops:
        return
    for exporter in exporters:
        provider.add_span_processor(ErrorKeepingProcessor(exporter.share()))
