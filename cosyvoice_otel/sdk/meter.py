"""The meter provider of the traced process, built by our configurator from ``--metrics``.

Built here rather than by the SDK from ``OTEL_METRICS_EXPORTER`` (the configurator sets that
variable to ``none`` for the SDK once the option table has read it) for one reason the SDK's
path cannot give: VIEWS. The stock HTTP instrumentations record metrics with attributes taken
from the request (``http.target`` holds Gradio's ``/file=<the user's file name>`` paths,
``http.host`` whatever Host header a client sent): they are private and unbounded. The views
below keep only an allow-list of bounded keys on ``http.*`` and ``rpc.*`` instruments, so no
metric exporter ever sees them; our own instruments are bounded by construction
(instrumentation/metrics.py).

``prometheus``: ``PrometheusExemplarReader`` (prometheus.py) on ``--metrics-host:--metrics-port``.
``otlp``: the SDK's periodic reader + OTLP/HTTP metric exporter (``OTEL_EXPORTER_OTLP_METRICS_*``,
``OTEL_METRIC_EXPORT_INTERVAL`` as usual).
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

from cosyvoice_otel.settings import Settings

# Attribute keys of the stock HTTP / RPC metrics that are bounded and carry nothing a user sent
# (old and stable semantic conventions): method, scheme, protocol, status, route, port.
SAFE_HTTP_KEYS = frozenset({
    "http.method", "http.request.method", "http.scheme", "url.scheme", "http.flavor",
    "network.protocol.name", "network.protocol.version", "http.status_code",
    "http.response.status_code", "http.route", "net.host.port", "server.port", "error.type",
    "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code",
})
PRIVACY_VIEWS = (View(instrument_name="http.*", attribute_keys=set(SAFE_HTTP_KEYS)),
                 View(instrument_name="rpc.*", attribute_keys=set(SAFE_HTTP_KEYS)))


def build_reader(settings: Settings) -> MetricReader | None:
    if settings.metrics == "prometheus":
        from cosyvoice_otel.sdk.prometheus import PrometheusExemplarReader

        return PrometheusExemplarReader(settings.metrics_host, settings.metrics_port)
    if settings.metrics == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        return PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=settings.otlp_metrics_endpoint))
    return None


def build_meter_provider(settings: Settings, resource: Resource | None) -> MeterProvider | None:
    """The provider for ``--metrics prometheus|otlp`` (None for ``none``)."""
    reader = build_reader(settings)
    if reader is None:
        return None
    return MeterProvider(metric_readers=[reader], resource=resource, views=PRIVACY_VIEWS)
