"""The base every exporter of ours stands on (``sdk/export_base.py``): a failure inside one
exporter's hand-over never reaches the SDK and is counted once, as ``export_error``, with one
line that says which failure; the contract's flush and shutdown."""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace.export import SpanExportResult

from cosyvoice_otel.sdk.export_base import CountingExporter

from ..support.tracing import Memory


class Breaking(CountingExporter):
    """An exporter whose transport raises (a bug, a library's surprise)."""

    def __init__(self) -> None:
        self._init_counting()
        self.handed: list[bytes] = []

    def _hand_over(self, payload: bytes) -> SpanExportResult:
        self.handed.append(payload)
        raise RuntimeError("transport broke")


def finished(n: int):
    rig = Memory()
    for i in range(n):
        rig.tracer.start_span(f"s{i}").end()
    spans = rig.spans()
    rig.provider.shutdown()
    return spans


def test_a_failing_hand_over_is_counted_once_as_export_error_and_said_once(caplog) -> None:
    exporter = Breaking()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(finished(2)) is SpanExportResult.FAILURE
        assert exporter.export(finished(3)) is SpanExportResult.FAILURE
    assert exporter.dropped == {"export_error": 5} and exporter.counters["sent"] == 0
    # one line for the streak, naming the failure (its type and message), never the spans
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: dropped 2 spans: export failed (RuntimeError: transport broke)"]


def test_flush_has_nothing_to_wait_for_and_shutdown_refuses_later_batches() -> None:
    exporter = Breaking()
    assert exporter.force_flush() is True
    assert exporter.export([]) is SpanExportResult.SUCCESS  # nothing to do is not a failure
    exporter.shutdown()
    assert exporter.export(finished(1)) is SpanExportResult.FAILURE
    assert exporter.handed == [] and exporter.dropped == {}  # refused, not handed over or counted
