"""What every exporter of ours shares: one way to count what was delivered and what was lost.

``CountingExporter`` is the base of the Zipkin HTTP, Kafka and file exporters: ``export()``
refuses after shutdown, encodes the batch once (Zipkin JSON v2), hands it over, and never
raises into the SDK. Every span ends in exactly one bucket:

* ``counters['sent']``: the backend accepted it (the only meaning of "exported");
* ``dropped[reason]``: lost for good, under one reason of ``schema.DROP_REASONS`` (``rejected``,
  ``too_large``, ``timeout``, ``spool_cap``, ``spool_unreadable``, ``export_error``);
* or still waiting in the spool (``SpoolingExporter``), later ``replayed`` (also ``sent``) or
  dropped.

The tracer-health metrics (``health.py``) and ``doctor --metrics`` read these, the same for
every exporter. Logging is by streak (``StreakLog``): one line when a kind of failure starts,
then at most one a minute while it lasts, never one per span or per batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cosyvoice_otel.sdk.spool import MAX_FILE_BYTES, Spool
from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder

logger = logging.getLogger("cosyvoice_otel.export")

LOG_INTERVAL = 60.0


def encode_spans(spans: list) -> bytes:
    """Decoded Zipkin JSON spans (a part of a batch) as a batch again."""
    return json.dumps(spans, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def span_count(payload: bytes) -> int:
    # a raw '"traceId"' only occurs as a key: inside a JSON string the quotes are escaped
    return payload.count(b'"traceId"')


class StreakLog:
    """One warning when a kind of event starts (a failure, a recovery), then at most one per
    ``LOG_INTERVAL`` while the same kind goes on, with the spans counted since the last line."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._kind: object = None
        self._last = 0.0
        self._since = 0

    def note(self, kind: object, count: int, message: str) -> None:
        now = time.monotonic()
        if kind == self._kind and now - self._last < self.interval:
            self._since += count
            return
        if kind == self._kind and self._since:
            message += f" ({self._since} more spans since the last such line)"
        logger.warning("cosyvoice-otel: %s", message)
        self._kind, self._last, self._since = kind, now, 0


class CountingExporter(SpanExporter):
    """The contract and the bookkeeping; subclasses implement ``_hand_over(payload)``."""

    def _init_counting(self) -> None:
        self._encoder = ZipkinJsonEncoder()
        self._log = StreakLog()
        self._closed = False
        self.counters = {"sent": 0, "spooled": 0, "replayed": 0, "failures": 0, "split": 0,
                         "maybe_duplicated": 0}
        self.dropped: Counter[str] = Counter()  # reason -> spans lost for good

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        return self._encoder.encode(spans)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            payload = self.encode(spans)
            return self._hand_over(payload)
        except Exception as exc:  # noqa: BLE001 - an exporter must never raise into the SDK
            return self._failed(exc, len(spans))

    def _hand_over(self, payload: bytes) -> SpanExportResult:
        raise NotImplementedError

    def _failed(self, exc: BaseException, count: int) -> SpanExportResult:
        self.drop(count, "export_error", f"export failed ({type(exc).__name__}: {exc})")
        return SpanExportResult.FAILURE

    def drop(self, count: int, reason: str, why: str) -> None:
        """Count ``count`` spans as lost for ``reason``; log it by streak."""
        self.dropped[reason] += count
        self._log.note(("dropped", reason), count, f"dropped {count} spans: {why}")

    def drain(self, timeout_s: float) -> None:
        """Until what was handed over in the background is delivered, spooled or counted
        (bounded). Exporters that deliver in ``export()`` itself have nothing to wait for."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self._closed = True


class SpoolingExporter(CountingExporter):
    """Plus a disk spool (one folder per destination) for batches the backend cannot take now."""

    def _init_spool(self, path: Path, max_bytes: int, spool_dir: str, away: str) -> None:
        self._init_counting()
        self.spool: Spool | None
        try:
            self.spool = Spool(path, max_bytes)
        except OSError as exc:
            logger.warning("cosyvoice-otel: spool %s unusable (%s); batches will be dropped "
                           "while %s is away", spool_dir, exc, away)
            self.spool = None

    def keep(self, payload: bytes, tries: int, away: str) -> bool:
        """Spool a batch for later, or count it dropped: ``spool_cap`` when it does not fit,
        ``disk_full`` when the disk refused the write. A batch over what the spool reads back
        (``MAX_FILE_BYTES``: huge attributes) is kept in halves, a single span that large is
        dropped (``too_large``): never spooled only to be refused on replay."""
        count = span_count(payload)
        if len(payload) > MAX_FILE_BYTES:
            spans = json.loads(payload)
            if len(spans) <= 1:
                self.drop(count, "too_large", f"{away} and one span is over the spool's "
                                              f"{MAX_FILE_BYTES}-byte bound of a batch")
                return False
            mid = len(spans) // 2
            return all([self.keep(encode_spans(half), tries, away)
                        for half in (spans[:mid], spans[mid:])])
        if self.spool is not None and self.spool.put(payload, tries):
            self.counters["spooled"] += count
            return True
        if self.spool is not None and self.spool.last_failure == "disk_full":
            self.drop(count, "disk_full", f"{away} and the spool's disk full")
            return False
        self.drop(count, "spool_cap", f"{away} and the spool full")
        return False

    def set_aside(self, path: Path, reason: str, why: str) -> None:
        """A spooled batch that will never be delivered: moved to ``bad/``, its spans counted."""
        if self.spool is None:
            return
        count = self.spool.count_spans(path)
        self.spool.set_aside(path)
        self.drop(count, reason, f"spool file {path.name} {why} (moved to "
                                 f"{self.spool.directory / 'bad'})")
