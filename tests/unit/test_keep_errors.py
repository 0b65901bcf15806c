"""Keep-errors in memory: the EXACT set of spans exported for a failed trace, with the error
arriving late and a span ending after the root (a Gradio event after its join request)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler


@pytest.fixture
def keep():
    kept = InMemorySpanExporter()
    processor = ErrorKeepingProcessor(kept, grace_s=60)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(0.0, keep_errors=True))
    provider.add_span_processor(processor)
    yield provider.get_tracer("t"), processor, kept
    processor.shutdown()


def ids(spans) -> set[int]:
    return {span.context.span_id for span in spans}


def test_a_late_error_exports_every_span_of_its_trace_and_only_those(keep) -> None:
    tracer, processor, kept = keep
    root = tracer.start_span("request")
    in_root = trace.set_span_in_context(root)
    early = tracer.start_span("frontend", context=in_root)
    early.end()
    late = tracer.start_span("gradio.event", context=in_root)  # outlives the root
    root.end()
    other = tracer.start_span("another request")  # a healthy trace alongside
    other.end()
    child = tracer.start_span("vocoder", context=trace.set_span_in_context(late))
    child.set_status(Status(StatusCode.ERROR, "boom"))  # the error comes last
    child.end()
    after = tracer.start_span("cleanup", context=trace.set_span_in_context(late))
    after.end()  # ended after the trace was kept: goes straight out
    late.end()
    processor.force_flush()
    assert ids(kept.get_finished_spans()) == ids([root, early, late, child, after])
    assert len(kept.get_finished_spans()) == 5  # each once
    assert processor.counters["kept_traces"] == 1


def test_a_trace_without_error_is_never_exported(keep) -> None:
    tracer, processor, kept = keep
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("stage"):
            pass
    processor.force_flush()
    assert kept.get_finished_spans() == ()


def test_an_explicit_remote_not_sampled_is_never_recorded(keep) -> None:
    tracer, processor, kept = keep
    remote = trace.SpanContext(0xABC, 0xDEF, is_remote=True,
                               trace_flags=trace.TraceFlags(0))
    span = tracer.start_span("request", context=trace.set_span_in_context(
        trace.NonRecordingSpan(remote)))
    assert not span.is_recording()
    span.end()
    assert processor._traces == {}


# ------------------------------------------------------------ bookkeeping, exactly

from opentelemetry.sdk.trace import Event, ReadableSpan  # noqa: E402

from cosyvoice_otel.sdk import keep_errors as ke  # noqa: E402

from ..support.helpers import FakeClock, fake_monotonic  # noqa: E402


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    return fake_monotonic(monkeypatch, ke)


def make(processor_kwargs=None):
    kept = InMemorySpanExporter()
    processor = ErrorKeepingProcessor(kept, **(processor_kwargs or {}))
    provider = TracerProvider(sampler=DeferAwareRatioSampler(0.0, keep_errors=True))
    provider.add_span_processor(processor)
    return provider.get_tracer("t"), processor, kept


def test_size_estimate_counts_name_attributes_and_events() -> None:
    span = ReadableSpan(name="abc", attributes={"k": "vv", "n": 12},
                        events=(Event("e", {"e": "x"}), Event("f", None)))
    assert ke._size(span) == 200 + 3 + (1 + 2) + (1 + 2) + (50 + 1 + 1) + 50
    assert ke._size(ReadableSpan(name="")) == 200


def test_a_new_processor_has_zero_counters_and_a_named_daemon_worker() -> None:
    _, processor, _ = make()
    assert processor.counters == {"kept_traces": 0, "discarded_traces": 0, "evicted": 0,
                                  "dropped": 0}
    assert (processor._spans, processor._bytes, processor._last_sweep) == (0, 0, 0.0)
    assert processor._worker.name == "cosyvoice-otel-keep" and processor._worker.daemon
    assert processor.grace_s == 30.0 and processor._queue.maxsize == 1000
    assert (processor.max_traces, processor.max_spans, processor.max_bytes) == (
        2000, 50_000, 32 * 1024 * 1024)
    processor.shutdown()


def test_open_spans_buffered_spans_and_bytes_are_counted_exactly(clock) -> None:
    tracer, processor, _ = make()
    root = tracer.start_span("root")
    child = tracer.start_span("child", context=trace.set_span_in_context(root))
    entry = processor._traces[root.get_span_context().trace_id]
    assert entry.open == 2 and entry.closed_at is None
    child.end()
    assert entry.open == 1 and entry.closed_at is None
    assert processor._spans == 1 and processor._bytes == entry.bytes == ke._size(child)
    clock.now = 105.0
    root.end()
    assert entry.open == 0 and entry.closed_at == 105.0
    assert processor._spans == 2 and processor._bytes == ke._size(child) + ke._size(root)
    assert [s.name for s in entry.spans] == ["child", "root"]
    processor.shutdown()


def test_a_closed_trace_without_error_is_discarded_after_the_grace(clock) -> None:
    tracer, processor, kept = make({"grace_s": 10})
    with tracer.start_as_current_span("quiet"):
        pass
    clock.now += 9.9  # within the grace: still buffered (a late span may still fail it)
    with tracer.start_as_current_span("other"):
        pass
    assert len(processor._traces) == 2
    clock.now += 10.1  # past it, and a sweep is due (at most one per second)
    with tracer.start_as_current_span("third"):
        pass
    assert processor.counters["discarded_traces"] == 2
    assert processor._spans == 1 and len(processor._traces) == 1
    processor.force_flush()
    assert kept.get_finished_spans() == ()
    processor.shutdown()


def test_sweeps_run_at_most_once_a_second(clock) -> None:
    tracer, processor, _ = make({"grace_s": 0})
    with tracer.start_as_current_span("a"):
        pass
    assert processor._last_sweep == clock.now  # the first end sweeps
    clock.now += 0.5
    with tracer.start_as_current_span("b"):
        pass
    assert len(processor._traces) == 1  # "b" closed, but no sweep within the second
    clock.now += 0.6
    with tracer.start_as_current_span("c"):
        pass
    assert processor._last_sweep == clock.now and processor.counters["discarded_traces"] == 3
    assert processor._traces == {}
    processor.shutdown()


@pytest.mark.parametrize(("limits", "traces", "evicted"), [
    ({"max_traces": 2}, 4, 2), ({"max_spans": 3}, 4, 1), ({"max_bytes": 500}, 3, 1)])
def test_bounds_evict_the_oldest_and_count_their_spans(limits, traces, evicted) -> None:
    tracer, processor, _ = make(limits)
    roots = [tracer.start_span(f"r{i}") for i in range(traces)]
    for root in roots:
        tracer.start_span("c", context=trace.set_span_in_context(root)).end()
    assert processor.counters["evicted"] == evicted
    remaining = list(processor._traces)
    assert remaining == [r.get_span_context().trace_id for r in roots[evicted:]]
    assert processor._spans == traces - evicted
    assert processor._bytes == sum(e.bytes for e in processor._traces.values())
    roots[0].end()  # its trace was evicted while the span ran: counted once more
    assert processor.counters["evicted"] == evicted + 1
    processor.shutdown()


def test_a_kept_traces_buffer_is_released_and_counted_once() -> None:
    tracer, processor, kept = make()
    root = tracer.start_span("root")
    failing = tracer.start_span("fail", context=trace.set_span_in_context(root))
    failing.set_status(Status(StatusCode.ERROR))
    failing.end()
    entry = processor._traces[root.get_span_context().trace_id]
    assert entry.kept and entry.spans == [] and entry.bytes == 0
    assert processor._spans == 0 and processor._bytes == 0
    root.end()
    processor.force_flush()
    assert processor.counters["kept_traces"] == 1
    assert [s.name for s in kept.get_finished_spans()] == ["fail", "root"]
    processor.shutdown()


def test_a_full_export_queue_drops_and_counts() -> None:
    import threading

    release = threading.Event()

    class Slow(InMemorySpanExporter):
        def export(self, spans):
            release.wait(10)
            return super().export(spans)

    processor = ErrorKeepingProcessor(Slow())
    processor._enqueue(["a"])  # taken by the worker, which then waits
    deadline = __import__("time").monotonic() + 5
    while processor._queue.qsize() and __import__("time").monotonic() < deadline:
        pass
    for i in range(processor._queue.maxsize):  # fills the queue
        processor._enqueue([i])
    assert processor.counters["dropped"] == 0
    processor._enqueue(["c", "d"])  # no room: dropped and counted
    assert processor.counters["dropped"] == 2
    release.set()
    processor.shutdown()


def test_an_exporter_error_is_logged_and_the_worker_goes_on(caplog) -> None:
    calls = []

    class Flaky(InMemorySpanExporter):
        def export(self, spans):
            calls.append(spans)
            if len(calls) == 1:
                raise RuntimeError("collector down")
            return super().export(spans)

    exporter = Flaky()
    processor = ErrorKeepingProcessor(exporter)
    with caplog.at_level("WARNING", logger="cosyvoice_otel.export"):
        processor._enqueue(["first"])
        processor._enqueue(["second"])
        assert processor.force_flush(5000)
    assert len(calls) == 2
    assert "exporting a kept trace failed (collector down)" in caplog.text
    processor.shutdown()
    processor._worker.join(5)
    assert not processor._worker.is_alive() and exporter._stopped


def test_force_flush_gives_up_at_its_deadline() -> None:
    import threading

    release = threading.Event()

    class Stuck(InMemorySpanExporter):
        def export(self, spans):
            release.wait(10)

    processor = ErrorKeepingProcessor(Stuck())
    processor._enqueue(["x"])
    assert processor.force_flush(100) is False
    release.set()
    assert processor.force_flush(5000) is True
    processor.shutdown()


def test_sampled_spans_are_left_to_the_batch_processor() -> None:
    kept = InMemorySpanExporter()
    processor = ErrorKeepingProcessor(kept)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(1.0, keep_errors=True))
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("sampled") as span:
        span.set_status(Status(StatusCode.ERROR))
    assert processor._traces == {} and processor.force_flush()
    assert kept.get_finished_spans() == ()
    processor.shutdown()


def test_counters_accumulate_across_traces_and_drops(clock) -> None:
    tracer, processor, kept = make()
    for name in ("a", "b"):
        with tracer.start_as_current_span(name) as span:
            span.set_status(Status(StatusCode.ERROR))
    root = tracer.start_span("two")
    tracer.start_span("x", context=trace.set_span_in_context(root)).end()
    root.end()
    entry = processor._traces[root.get_span_context().trace_id]
    assert entry.bytes == sum(ke._size(s) for s in entry.spans) and len(entry.spans) == 2
    assert processor.counters["kept_traces"] == 2
    processor.shutdown()


def test_drops_accumulate() -> None:
    import queue

    processor = ErrorKeepingProcessor(InMemorySpanExporter())
    processor.shutdown()  # the worker is gone: nothing takes from the queue now
    processor._worker.join(5)
    processor._queue = queue.Queue(maxsize=1)
    processor._enqueue(["a"])
    processor._enqueue(["c"])
    processor._enqueue(["d", "e"])
    assert processor.counters["dropped"] == 3


def test_a_sweep_is_due_exactly_one_second_after_the_last(clock) -> None:
    tracer, processor, _ = make({"grace_s": 0})
    with tracer.start_as_current_span("a"):
        pass
    clock.now += 1.0
    with tracer.start_as_current_span("b"):
        pass
    assert processor._last_sweep == clock.now and processor._traces == {}
    processor.shutdown()


def test_the_sweep_looks_past_a_trace_that_is_still_open(clock) -> None:
    tracer, processor, _ = make({"grace_s": 5})
    still_open = tracer.start_span("open")
    with tracer.start_as_current_span("closed"):
        pass
    clock.now += 6
    with tracer.start_as_current_span("later") as later:
        pass
    assert set(processor._traces) == {still_open.get_span_context().trace_id,
                                      later.get_span_context().trace_id}
    assert processor.counters["discarded_traces"] == 1  # "closed", found behind "open"
    still_open.end()
    processor.shutdown()


def test_the_byte_bound_is_inclusive() -> None:
    tracer, _, _ = make()
    with tracer.start_as_current_span("r") as probe:
        pass
    size = ke._size(probe)
    tracer, processor, _ = make({"max_bytes": 2 * size})
    roots = [tracer.start_span("r") for _ in range(3)]
    roots[0].end()
    roots[1].end()
    assert processor.counters["evicted"] == 0  # exactly at the bound: kept
    roots[2].end()
    assert processor.counters["evicted"] == 1
    processor.shutdown()


def test_an_exporter_error_is_logged_with_this_exact_line(caplog) -> None:
    class Failing(InMemorySpanExporter):
        def export(self, spans):
            raise RuntimeError("down")

    processor = ErrorKeepingProcessor(Failing())
    with caplog.at_level("WARNING", logger="cosyvoice_otel.export"):
        processor._enqueue(["x"])
        processor.force_flush(5000)
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: exporting a kept trace failed (down)"]
    processor.shutdown()


def test_force_flush_returns_at_once_when_nothing_is_pending(monkeypatch) -> None:
    _, processor, _ = make()
    from cosyvoice_otel.sdk import keep_errors

    naps: list[float] = []
    monkeypatch.setattr(keep_errors.time, "sleep", naps.append)
    assert processor.force_flush(3000) is True
    assert naps == []  # nothing pending: no wait at all, not the deadline sat out
    processor.shutdown()


# ------------------------------------------------------- masks held while a trace is held

from cosyvoice_otel import masking  # noqa: E402


def held(trace_id: int) -> bool:
    return masking._pins.get(trace_id, 0) > 0


@pytest.mark.parametrize("release", ["grace", "bound"])
def test_a_held_trace_is_pinned_in_the_masking_registry_until_released(clock, release) -> None:
    """The request's texts stay masked while keep-errors may still export its trace: pinned
    at its first span, unpinned when the grace sweep or the bound lets it go."""
    masking.forget_all()
    tracer, processor, _ = make({"grace_s": 10, "max_traces": 1})
    root = tracer.start_span("request")
    trace_id = root.get_span_context().trace_id
    assert held(trace_id)
    root.end()
    if release == "grace":
        clock.now += 11
        tracer.start_span("another").end()  # the due sweep lets the closed trace go
    else:
        tracer.start_span("another").end()  # one trace over max_traces: the oldest goes
    assert not held(trace_id)
    assert trace_id not in processor._traces
    processor.shutdown()
    masking.forget_all()
