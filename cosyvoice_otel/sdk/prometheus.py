"""``/metrics`` for Prometheus, with exemplars: an OTel ``MetricReader`` served by prometheus_client.

Why not the official ``opentelemetry-exporter-prometheus`` (0.66b1): it drops exemplars (its
translation never reads ``HistogramDataPoint.exemplars``), and exemplars are the point of issue
11: a slow bucket must link to a trace. prometheus_client (the Prometheus project's own Python
library, which the official exporter also uses) writes OpenMetrics with exemplars when the
scraper asks for it (Prometheus does with ``--enable-feature=exemplar-storage``) and serves
``/metrics`` from a thread. This module only translates the SDK's data points into its metric
families, in the OTel -> Prometheus naming of the spec (dots -> underscores, unit suffix,
``_total`` on counters, resource attributes in ``target_info``).

The reader is the ``opentelemetry_metrics_exporter`` entry point ``cosyvoice_prometheus``; the
SDK's configurator builds it (``OTEL_METRICS_EXPORTER``) with our ``host``/``port``. A busy port
is one warning: the app and its tracing go on without /metrics.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    MetricReader,
    MetricsData,
    Sum,
)
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar

logger = logging.getLogger("cosyvoice_otel")

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
# OTel unit -> Prometheus name suffix (the spec's table, the units we use)
_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def metric_name(name: str, unit: str) -> str:
    """``tts.request.duration`` + ``s`` -> ``tts_request_duration_seconds``; ``{span}``-style
    annotations add nothing."""
    base = _INVALID.sub("_", name)
    suffix = "" if unit.startswith("{") else _UNIT_SUFFIX.get(unit, _INVALID.sub("_", unit))
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    return _INVALID.sub("_", key)


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _exemplars_by_bucket(point: Any) -> dict[int, Exemplar]:
    """The data point's exemplars (the SDK keeps one per bucket), keyed by bucket index."""
    out: dict[int, Exemplar] = {}
    bounds = list(point.explicit_bounds)
    for exemplar in point.exemplars or ():
        if not exemplar.trace_id:
            continue
        index = next((i for i, bound in enumerate(bounds) if exemplar.value <= bound),
                     len(bounds))
        out[index] = Exemplar({"trace_id": f"{exemplar.trace_id:032x}",
                               "span_id": f"{exemplar.span_id:016x}"},
                              exemplar.value, exemplar.time_unix_nano / 1e9)
    return out


MAX_KEPT_EXEMPLARS = 10_000  # per reader: (series, bucket) pairs remembered between scrapes


def to_families(data: MetricsData | None,
                kept: dict[tuple, Exemplar] | None = None) -> list[Metric]:
    """The SDK's collected data as prometheus_client metric families (unit-testable).
    ``kept``: the exemplars of earlier scrapes, per series and bucket. The SDK hands each
    exemplar to ONE collection (its reservoir starts afresh after it): without them, a
    bucket's link to a trace would show in one scrape and be gone from the next, though the
    bucket still counts that observation. An exemplar is kept until a newer one replaces
    it."""
    families: dict[str, Metric] = {}
    if data is None:
        return []
    for resource_metrics in data.resource_metrics:
        resource = {label_name(k): _label_value(v)
                    for k, v in resource_metrics.resource.attributes.items()}
        if resource and "target_info" not in families:
            info = InfoMetricFamily("target", "Target metadata")
            info.add_metric([], resource)
            families["target_info"] = info
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                _add(families, metric, kept)
    return list(families.values())


def _add(families: dict[str, Metric], metric: Any,
         kept: dict[tuple, Exemplar] | None = None) -> None:
    """One metric's data points. Each point has its OWN label set (a failed request has
    ``error_type``, a good one not; an app stage has no mode): the family's label names are
    the union over its points, and each point's values are read by name, missing ones empty
    (Prometheus reads an empty label as absent), never zipped by position."""
    name = metric_name(metric.name, metric.unit or "")
    data = metric.data
    description = metric.description or metric.name
    points = [(point, {label_name(k): _label_value(v) for k, v in point.attributes.items()})
              for point in data.data_points]
    family = families.get(name)
    if family is None:
        names = sorted({key for _point, labels in points for key in labels})
        if isinstance(data, Histogram):
            family = HistogramMetricFamily(name, description, labels=names)
        elif isinstance(data, Sum) and data.is_monotonic:  # the family adds "_total"
            family = CounterMetricFamily(name, description, labels=names)
        elif isinstance(data, (Sum, Gauge)):
            family = GaugeMetricFamily(name, description, labels=names)
        else:
            return
        families[name] = family
    names = list(family._labelnames)  # type: ignore[attr-defined]  # a family met again (another scope) keeps its names
    for point, labels in points:
        values = [labels.get(key, "") for key in names]
        if isinstance(family, HistogramMetricFamily):
            exemplars = _exemplars_by_bucket(point)
            buckets: list[Any] = []
            cumulative = 0
            bounds = [*point.explicit_bounds, math.inf]
            for index, (bound, count) in enumerate(zip(bounds, point.bucket_counts, strict=True)):
                cumulative += count
                exemplar = exemplars.get(index)
                if kept is not None:
                    key = (name, tuple(values), index)
                    if exemplar is not None:
                        kept.pop(key, None)
                        kept[key] = exemplar  # the newest, last in the order
                        while len(kept) > MAX_KEPT_EXEMPLARS:
                            kept.pop(next(iter(kept)))
                    elif cumulative:
                        exemplar = kept.get(key)
                buckets.append((_le(bound), cumulative, exemplar) if exemplar
                               else (_le(bound), cumulative))
            family.add_metric(values, buckets, point.sum)
        else:
            family.add_metric(values, point.value)  # type: ignore[attr-defined]


class _Collector:
    """prometheus_client's custom-collector protocol: collect() at each scrape."""

    def __init__(self, reader: PrometheusExemplarReader) -> None:
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        with self.reader._lock:
            data = self.reader._scrape()
            return to_families(data, self.reader.exemplars)


class PrometheusExemplarReader(MetricReader):
    """Pull reader: each scrape collects from the SDK (cumulative) and renders the result."""

    def __init__(self, host: str = "0.0.0.0", port: int = 9464) -> None:
        super().__init__()
        self._latest: MetricsData | None = None
        self._lock = threading.Lock()
        self.exemplars: dict[tuple, Exemplar] = {}  # kept between scrapes (to_families)
        # our own registry: an app that uses prometheus_client itself keeps its global one
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.server: Any = None
        self.address = f"{host}:{port}"
        try:
            self.server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            logger.warning("cosyvoice-otel: metrics port %s is not available (%s); /metrics is "
                           "off, tracing goes on (choose another with --metrics-port)",
                           self.address, exc.strerror or exc)

    def scrape(self) -> MetricsData | None:
        with self._lock:  # two scrapers at once: one collection at a time
            return self._scrape()

    def _scrape(self) -> MetricsData | None:
        self._latest = None
        self.collect()
        return self._latest

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                         **kwargs: Any) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
