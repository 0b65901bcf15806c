"""SDK setup for the traced process: the ``opentelemetry_configurator`` entry point.

``opentelemetry-instrument`` runs the configurator named by ``OTEL_PYTHON_CONFIGURATOR``
(the launcher sets ``cosyvoice_otel``). Ours is the SDK's own configurator (sampler, id
generator, resource and the SDK's own exporters from the ``OTEL_*`` variables, as usual) with
these additions:

* the exporter is the one the settings chose, from the exporter table (settings.py): the SDK
  builds its own (otlp, console) by name; ours (Zipkin, the Zipkin file, Kafka) are built here
  with their arguments from the settings and handed to the SDK as a span processor;
* every exporter, whatever it is (Zipkin, OTLP, the Zipkin file, console, one
  added later), sits behind ``RedactingSpanExporter``: no exporter can skip redaction;
* with ``cosyvoice_ratio`` at a rate below 1 and keep-errors on, an ``ErrorKeepingProcessor``
  per exporter (sharing it) exports the failed traces that the ratio dropped;
* with ``--metrics``, the sampler records what it drops (the wrappers measure every request),
  and the meter provider is ours (meter.py: privacy views on the stock HTTP metrics), with the
  tracer's health counters (health.py) on it;
* the process lifecycle (lifecycle.py): one clock for every span, and a SIGTERM flush that
  waits for the exporters built here.

A failure here is one warning and an app without tracing, never a crashed app.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from cosyvoice_otel.sdk import lifecycle
from cosyvoice_otel.sdk.health import QueueDrops, TracerHealth, count_queue_drops
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter
from cosyvoice_otel.settings import EXPORTERS_BY_NAME, Exporter, Settings, current

logger = logging.getLogger("cosyvoice_otel")


class CosyVoiceConfigurator(_OTelSDKConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        exporters: list[RedactingSpanExporter] = []
        try:  # the option table, resolved once for the whole SDK setup
            settings = current()
            chosen = EXPORTERS_BY_NAME[settings.exporter]
            if os.environ.get("OTEL_TRACES_SAMPLER") == "cosyvoice_ratio":
                from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

                kwargs.setdefault("sampler", DeferAwareRatioSampler(
                    settings.sampling_rate, keep_errors=settings.keep_errors,
                    record_all=settings.metrics != "none"))
        except Exception as exc:  # noqa: BLE001 - tracing setup must never stop the app
            logger.warning("cosyvoice-otel: tracing is off: settings unreadable (%s: %s)",
                           type(exc).__name__, exc)
            return
        keep_user_agent = settings.user_agent
        queues: list[QueueDrops] = []

        def export_processor(exporter: SpanExporter) -> BatchSpanProcessor:
            redacting = RedactingSpanExporter(exporter, keep_user_agent=keep_user_agent)
            exporters.append(redacting)
            processor = BatchSpanProcessor(redacting)
            drops = count_queue_drops(processor)
            if drops is not None:
                queues.append(drops)
            return processor

        kwargs.setdefault("export_span_processor", export_processor)
        if settings.trace_response:  # the ASGI instrumentation writes it on every response
            from opentelemetry.instrumentation.propagators import (
                TraceResponsePropagator,
                set_global_response_propagator,
            )

            set_global_response_propagator(TraceResponsePropagator())
        try:
            ours = build_exporter(chosen, settings)
        except Exception as exc:  # noqa: BLE001 - tracing setup must never stop the app
            logger.warning("cosyvoice-otel: tracing is off: the %s exporter could not be set up "
                           "(%s: %s)", chosen.name, type(exc).__name__, exc)
            return
        if ours is not None:
            kwargs["span_processors"] = [*(kwargs.get("span_processors") or ()),
                                         export_processor(ours)]
        # Metrics: our meter provider (meter.py), built from the option table BEFORE the SDK's
        # setup, which then keeps it (the SDK's own path has no views, and always installs a
        # provider: its "overriding is not allowed" notice is expected, filtered out).
        # OTEL_METRICS_EXPORTER was read by the option table; the SDK must not read it again.
        os.environ["OTEL_METRICS_EXPORTER"] = "none"
        meter_provider = install_meter_provider(settings, kwargs)
        quiet = _ExpectedOverride()
        api_logger = logging.getLogger("opentelemetry.metrics._internal")
        if meter_provider is not None:
            api_logger.addFilter(quiet)
        # The settings chose the exporter (OTEL_TRACES_EXPORTER's first name is one of their
        # sources, the launcher renders it): the SDK builds its own exporters by that name, ours
        # are built above from the exporter table, so the SDK reads "none" for them. Restored
        # after: the app and its subprocesses see the environment they were given.
        given = os.environ.get("OTEL_TRACES_EXPORTER")
        os.environ["OTEL_TRACES_EXPORTER"] = "none" if chosen.target else chosen.otel_name
        try:
            super()._configure(**kwargs)
        except Exception as exc:  # noqa: BLE001 - tracing setup must never stop the app
            logger.warning("cosyvoice-otel: tracing is off: the OpenTelemetry SDK could not be "
                           "set up (%s: %s)", type(exc).__name__, exc)
            return
        finally:
            api_logger.removeFilter(quiet)
            if given is None:
                os.environ.pop("OTEL_TRACES_EXPORTER", None)
            else:
                os.environ["OTEL_TRACES_EXPORTER"] = given
        provider = trace.get_tracer_provider()
        try:
            lifecycle.install(provider, [redacting.inner for redacting in exporters])
        except Exception as exc:  # noqa: BLE001
            logger.warning("cosyvoice-otel: span clock / SIGTERM flush not installed (%s: %s)",
                           type(exc).__name__, exc)
        keepers: list[Any] = []
        try:
            keepers = add_error_keeping(provider, exporters)
        except Exception as exc:  # noqa: BLE001
            logger.warning("cosyvoice-otel: keep-errors is off (%s: %s)", type(exc).__name__, exc)
        if meter_provider is not None:
            try:
                TracerHealth(exporters, queues, keepers).register(
                    meter_provider.get_meter("cosyvoice_otel.health"))
            except Exception as exc:  # noqa: BLE001
                logger.warning("cosyvoice-otel: tracer-health metrics are off (%s: %s)",
                               type(exc).__name__, exc)


class _ExpectedOverride(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Overriding of current MeterProvider" not in record.getMessage()


def install_meter_provider(settings: Settings, kwargs: dict[str, Any]) -> Any:
    """The global meter provider for ``--metrics prometheus|otlp`` (None for none), with the
    resource the SDK will give the tracer provider (same attributes, same detectors; the SDK
    keeps ``service.instance.id`` per process). A failure is one warning: tracing goes on."""
    if settings.metrics == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource

        from cosyvoice_otel.sdk.meter import build_meter_provider

        attributes = dict(kwargs.get("resource_attributes") or {})
        if kwargs.get("auto_instrumentation_version"):
            attributes["telemetry.auto.version"] = kwargs["auto_instrumentation_version"]
        provider = build_meter_provider(settings, Resource.create(attributes))
        if provider is not None:
            metrics.set_meter_provider(provider)
        return provider
    except Exception as exc:  # noqa: BLE001 - metrics must never stop the app or tracing
        logger.warning("cosyvoice-otel: metrics are off (%s: %s)", type(exc).__name__, exc)
        return None


def build_exporter(row: Exporter, settings: Settings) -> SpanExporter | None:
    """The exporter a row of the exporter table names, when it is ours (``target``), built with
    its arguments from the settings; None for the SDK's own, which the SDK builds by name from
    the variables the launcher rendered. Imported only when chosen (confluent-kafka is heavy)."""
    if not row.target:
        return None
    module, _, name = row.target.partition(":")
    exporter_class = getattr(importlib.import_module(module), name)
    exporter: SpanExporter = exporter_class(**(row.args(settings) if row.args else {}))
    return exporter


def add_error_keeping(provider: Any, exporters: list[RedactingSpanExporter]) -> list[Any]:
    """Keep failed traces that the ratio dropped (keep_errors.py), when the sampler records
    them (``cosyvoice_ratio`` with keep-errors and a rate below 1)."""
    from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
    from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

    sampler = getattr(provider, "sampler", None)
    if not isinstance(sampler, DeferAwareRatioSampler) or not sampler.records_drops:
        return []
    keepers = [ErrorKeepingProcessor(exporter.share()) for exporter in exporters]
    for keeper in keepers:
        provider.add_span_processor(keeper)
    return keepers
