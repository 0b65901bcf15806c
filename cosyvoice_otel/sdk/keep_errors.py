"""Keep every failed trace at any sampling rate: record unsampled spans, decide at the end.

With ``--keep-errors`` (default on) and a rate below 1, the sampler (``propagation.py``) turns
its LOCAL "drop" decisions into RECORD_ONLY: the spans are recorded but not sampled, so the SDK's
batch processor ignores them. ``ErrorKeepingProcessor`` buffers them per trace and decides when
the trace's local spans have all ended: if one of them ended with status ERROR, the whole
buffered trace is exported (through its own exporter, off the request thread); otherwise it is
forgotten. A trace whose last span ended is kept "closed" for ``grace_s`` (a Gradio event runs
after its join request has answered), so late spans of a failing request still bring the early
ones along. An incoming "not sampled" decision is honoured: those spans are never recorded.

Hard bounds: ``max_traces``, ``max_spans`` (all buffered) and ``max_bytes`` (estimated); past
them the oldest trace is evicted and counted (``counters['evicted']``). While a trace is held
here it is pinned in the masking registry (``masking.pin``): its request texts stay masked
when it is exported late, however many other requests started meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import StatusCode

from cosyvoice_otel import masking
from cosyvoice_otel.sdk.propagation import DEFER_KEY, RECORD_VALUE

logger = logging.getLogger("cosyvoice_otel.export")


def _size(span: ReadableSpan) -> int:
    size = 200 + len(span.name)
    for key, value in (span.attributes or {}).items():
        size += len(key) + len(str(value))
    for event in span.events:
        size += 50 + sum(len(k) + len(str(v)) for k, v in (event.attributes or {}).items())
    return size


@dataclass
class _Trace:
    spans: list[ReadableSpan] = field(default_factory=list)
    bytes: int = 0
    open: int = 0
    failed: bool = False
    kept: bool = False  # already exported because it failed: later spans go straight out
    closed_at: float | None = None


class ErrorKeepingProcessor(SpanProcessor):
    def __init__(self, exporter: SpanExporter, max_traces: int = 2000, max_spans: int = 50_000,
                 max_bytes: int = 32 * 1024 * 1024, grace_s: float = 30.0) -> None:
        self.exporter = exporter
        self.max_traces, self.max_spans, self.max_bytes = max_traces, max_spans, max_bytes
        self.grace_s = grace_s
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._spans = 0
        self._bytes = 0
        self._last_sweep = 0.0
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[ReadableSpan] | None] = queue.Queue(maxsize=1000)
        self._worker = threading.Thread(target=self._export_loop, name="cosyvoice-otel-keep",
                                        daemon=True)
        self._worker.start()
        self.counters = {"kept_traces": 0, "discarded_traces": 0, "evicted": 0, "dropped": 0}

    @staticmethod
    def _record_only(span: ReadableSpan) -> bool:
        """A local drop the sampler recorded for us (``cosyvoice=rec``); not a span recorded
        only for the metrics (an incoming "not sampled": honoured, never exported)."""
        context = span.context
        return (not context.trace_flags.sampled
                and context.trace_state.get(DEFER_KEY) == RECORD_VALUE)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not self._record_only(span):
            return
        with self._lock:
            entry = self._traces.get(span.context.trace_id)
            if entry is None:
                entry = self._traces[span.context.trace_id] = _Trace()
                masking.pin(span.context.trace_id)
            entry.open += 1
            entry.closed_at = None
            self._traces.move_to_end(span.context.trace_id)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._record_only(span):
            return
        out: list[ReadableSpan] | None = None
        with self._lock:
            entry = self._traces.get(span.context.trace_id)
            if entry is None:  # evicted while running: its start was counted, now it is lost
                self.counters["evicted"] += 1
                return
            entry.open = max(0, entry.open - 1)
            if entry.kept:
                out = [span]
            else:
                entry.spans.append(span)
                size = _size(span)
                entry.bytes += size
                self._spans += 1
                self._bytes += size
                if span.status.status_code is StatusCode.ERROR:
                    entry.failed = True
                if entry.failed:
                    out, entry.kept = self._release(entry), True
                    self.counters["kept_traces"] += 1
            if entry.open == 0:
                entry.closed_at = time.monotonic()
            self._expire_and_bound()
        if out:
            self._enqueue(out)

    def _release(self, entry: _Trace) -> list[ReadableSpan]:
        spans, entry.spans = entry.spans, []
        self._spans -= len(spans)
        self._bytes -= entry.bytes
        entry.bytes = 0
        return spans

    def _expire_and_bound(self) -> None:
        now = time.monotonic()
        # the grace sweep scans every buffered trace: at most once a second, not per span end
        if now - self._last_sweep >= 1.0:
            self._last_sweep = now
            self._sweep(now)
        while self._traces and (len(self._traces) > self.max_traces or self._spans >
                                self.max_spans or self._bytes > self.max_bytes):
            trace_id, entry = self._traces.popitem(last=False)
            self.counters["evicted"] += len(entry.spans)
            self._release(entry)
            masking.unpin(trace_id)

    def _sweep(self, now: float) -> None:
        for trace_id in list(self._traces):
            entry = self._traces[trace_id]
            if entry.closed_at is None or now - entry.closed_at < self.grace_s:
                continue
            if not entry.kept:
                self.counters["discarded_traces"] += 1
            self._release(entry)
            del self._traces[trace_id]
            masking.unpin(trace_id)  # what it exported is out of the queue by now (grace_s)

    def _enqueue(self, spans: list[ReadableSpan]) -> None:
        try:
            self._queue.put_nowait(spans)
        except queue.Full:
            self.counters["dropped"] += len(spans)

    def _export_loop(self) -> None:
        while True:
            spans = self._queue.get()
            if spans is None:
                return
            try:
                self.exporter.export(spans)
            except Exception as exc:  # noqa: BLE001 - never let the worker die
                logger.warning("cosyvoice-otel: exporting a kept trace failed (%s)", exc)
            finally:
                self._queue.task_done()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def shutdown(self) -> None:
        self.force_flush(3000)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self.exporter.shutdown()
