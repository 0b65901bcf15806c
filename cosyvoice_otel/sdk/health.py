"""The tracer's own health as metrics: what was exported, spooled, replayed, dropped and why.

The numbers already exist as plain counters in the parts that do the work (the SDK's batch
queue, our exporters, keep-errors, the wrappers' contained errors); this module only exposes
them as OTel observable instruments, read at collection time: nothing is added on the request
path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from cosyvoice_otel import schema as s


class QueueDrops:
    """Counts spans the SDK's batch queue dropped because it was full. Installed as the SDK
    ``BatchProcessor``'s processor-metrics hook (its ``drop_items`` is called exactly there);
    what was installed before (the SDK's own internal metrics, if enabled) still gets every
    call."""

    def __init__(self, previous: Any = None) -> None:
        self.dropped = 0
        self.previous = previous

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self.dropped += count
        if self.previous is not None:
            self.previous.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        if self.previous is not None:
            self.previous.finish_items(count)


def count_queue_drops(processor: Any) -> QueueDrops | None:
    """Hook ``QueueDrops`` into a ``BatchSpanProcessor`` (None if the SDK's layout changed:
    a test pins the layout of the SDK version we require)."""
    batch = getattr(processor, "_batch_processor", None)
    if batch is None or not hasattr(batch, "_metrics"):
        return None
    drops = QueueDrops(batch._metrics)
    batch._metrics = drops
    return drops


class TracerHealth:
    """Observable instruments over the export pipeline's counters."""

    def __init__(self, exporters: Iterable[Any] = (), queues: Iterable[QueueDrops] = (),
                 keepers: Iterable[Any] = ()) -> None:
        self.exporters = list(exporters)  # RedactingSpanExporter, one per configured exporter
        self.queues = list(queues)
        self.keepers = list(keepers)  # ErrorKeepingProcessor

    def totals(self) -> dict[str, float]:
        """Every number, summed over the exporters (also what ``doctor`` explains). A span
        counts as exported only when the backend accepted it; each lost span counts once,
        under its reason."""
        from cosyvoice_otel.errors import ERRORS
        from cosyvoice_otel.sdk.export_base import CountingExporter

        out: dict[str, float] = {"exported": 0, "spooled": 0, "replayed": 0, "spool_bytes": 0, "failures": 0,
               "tracing_errors": sum(ERRORS.values()), "values_replaced": 0}
        out.update({f"dropped.{reason}": 0 for reason in s.DROP_REASONS})
        for redacting in self.exporters:
            outer = redacting.counters
            inner = redacting.inner
            out["dropped.export_error"] += outer.get("redaction_failed", 0)
            out["values_replaced"] += outer.get("placeholders", 0)
            if isinstance(inner, CountingExporter):  # ours: what the backend answered
                for key in ("spooled", "replayed", "failures"):
                    out[key] += inner.counters[key]
                out["exported"] += inner.counters["sent"]
                for reason, count in inner.dropped.items():
                    out[f"dropped.{reason}"] = out.get(f"dropped.{reason}", 0) + count
                spool = getattr(inner, "spool", None)  # None when the folder is unusable
                if spool is not None:
                    out["spool_bytes"] += spool.size
            else:  # any other exporter: its SUCCESS/FAILURE answers
                out["exported"] += outer["exported"]
                out["failures"] += outer["failed_exports"]
                out["dropped.export_error"] += outer["failed"]
        out["dropped.queue_full"] = sum(q.dropped for q in self.queues)
        out["dropped.keep_errors_evicted"] = sum(
            k.counters["evicted"] + k.counters["dropped"] for k in self.keepers)
        return out

    def register(self, meter: Meter) -> None:
        table = {m.name: m for m in s.METRICS}  # units and descriptions: the schema's

        def instrument(name: str, observe: Any) -> None:
            row = table[name]
            create = (meter.create_observable_gauge if row.instrument == "gauge"
                      else meter.create_observable_counter)
            create(name, [observe], unit=row.unit, description=row.meaning)

        def one(key: str) -> Any:
            return lambda _options: [Observation(self.totals()[key])]

        for name, key in ((s.SPANS_EXPORTED, "exported"), (s.SPANS_SPOOLED, "spooled"),
                          (s.SPANS_REPLAYED, "replayed"), (s.EXPORT_FAILURES, "failures"),
                          (s.TRACING_ERRORS, "tracing_errors"), (s.SPOOL_SIZE, "spool_bytes"),
                          (s.VALUES_REPLACED, "values_replaced")):
            instrument(name, one(key))

        def dropped(_options: CallbackOptions) -> list[Observation]:
            totals = self.totals()
            return [Observation(totals[f"dropped.{reason}"], {s.DROP_REASON: reason})
                    for reason in s.DROP_REASONS]

        instrument(s.SPANS_DROPPED, dropped)
