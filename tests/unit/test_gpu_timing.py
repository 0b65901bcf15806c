"""GPU-honest stage time without serialising (--gpu-timing events), with a stand-in CUDA API
that records which thread called what: the request thread records events and never waits;
the resolver thread waits for the end event, reads the time, and only then ends the span."""

from __future__ import annotations

import threading
import time

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import gpu_timing
from cosyvoice_otel.instrumentation.gpu_timing import GpuTimer
from cosyvoice_otel.instrumentation.instrumentor import build_options
from cosyvoice_otel.instrumentation.stage_span import StageSpan
from cosyvoice_otel.settings import Settings

from ..support.tracing import stage_options


class FakeCuda:
    """torch.cuda's surface that GpuTimer uses; a GPU clock the test moves by hand."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.gpu_ms = 0.0
        self.allocated = 1000
        self.peak = 5000
        self.ready = threading.Event()
        self.ready.set()
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing
                self.at: float | None = None

            def record(self) -> None:
                cuda._note("record")
                self.at = cuda.gpu_ms

            def synchronize(self) -> None:
                cuda._note("event.synchronize")
                cuda.ready.wait(10)

            def elapsed_time(self, end: Event) -> float:
                cuda._note("elapsed_time")
                return end.at - self.at

        self.Event = Event

    def _note(self, what: str) -> None:
        self.log.append((what, threading.current_thread().name))

    def synchronize(self) -> None:  # the device-wide wait: never ours
        self._note("device.synchronize")
        raise AssertionError("GPU timing must never synchronize the device")

    def memory_allocated(self) -> int:
        return self.allocated

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self._note("reset_peak")


@pytest.fixture
def cuda() -> FakeCuda:
    return FakeCuda()


def timed(memory, timer: GpuTimer, name: str = "flow") -> StageSpan:
    from opentelemetry import context

    return StageSpan(memory.tracer, name, context.Context(), None, {},
                     stage_options(gpu_timing=timer))


def test_the_request_thread_records_events_and_never_waits(memory, cuda) -> None:
    timer = GpuTimer(cuda)
    cuda.ready.clear()  # the GPU is still busy when the stage's Python call returns
    stage = timed(memory, timer)
    cuda.gpu_ms = 12.5
    cuda.allocated = 1800
    stage.end()
    request_thread = threading.current_thread().name
    assert memory.spans() == []  # not ended yet: its end event has not completed
    on_request = [what for what, thread in cuda.log if thread == request_thread]
    assert on_request == ["record", "reset_peak", "record"]  # no wait of any kind here
    cuda.ready.set()
    assert timer.drain(10)
    (span,) = memory.spans()
    assert span.attributes[s.GPU_MS] == 12.5
    assert span.attributes[s.GPU_MEMORY_DELTA] == 800
    assert span.attributes[s.CUDA_PEAK_BYTES] == 5000
    assert span.attributes[s.GPU_PEAK_EXCLUSIVE] is True
    waits = [thread for what, thread in cuda.log if what in ("event.synchronize",
                                                             "elapsed_time")]
    assert waits and set(waits) == {"cosyvoice-otel-gpu"}
    assert ("device.synchronize", request_thread) not in cuda.log


def test_the_span_keeps_the_wall_time_of_the_call_not_of_the_resolution(memory, cuda) -> None:
    timer = GpuTimer(cuda)
    cuda.ready.clear()
    stage = timed(memory, timer)
    before_end = time.time_ns()
    stage.end()
    after_end = time.time_ns()
    time.sleep(0.05)  # the GPU finishes later
    cuda.ready.set()
    timer.drain(10)
    (span,) = memory.spans()
    assert before_end <= span.end_time <= after_end


def test_under_concurrency_no_peak_is_claimed(memory, cuda) -> None:
    timer = GpuTimer(cuda)
    first = timed(memory, timer, "flow")
    second = timed(memory, timer, "vocoder")  # another request's stage starts meanwhile
    second.end()
    first.end()
    timer.drain(10)
    spans = {span.name: span for span in memory.spans()}
    for span in spans.values():
        assert s.CUDA_PEAK_BYTES not in span.attributes
        assert s.GPU_PEAK_EXCLUSIVE not in span.attributes
        assert s.GPU_MS in span.attributes and s.GPU_MEMORY_DELTA in span.attributes
    assert [what for what, _ in cuda.log].count("reset_peak") == 1  # only while alone


def test_without_cuda_nothing_is_recorded_and_the_span_ends_at_once(memory) -> None:
    timer = GpuTimer()  # torch.cuda when CUDA is in use; here it is not
    stage = timed(memory, timer)
    assert stage.gpu is None
    stage.end()
    (span,) = memory.spans()
    assert s.GPU_MS not in span.attributes


def test_a_full_resolver_queue_ends_spans_at_once_and_counts_them(memory, cuda,
                                                                  monkeypatch) -> None:
    timer = GpuTimer(cuda)
    import queue

    timer._queue = queue.Queue(maxsize=1)
    cuda.ready.clear()
    stages = [timed(memory, timer) for _ in range(3)]
    for stage in stages:
        stage.end()
    assert timer.skipped >= 1
    assert len(memory.spans()) >= 1  # the skipped ones ended at once, without GPU figures
    cuda.ready.set()
    timer.drain(10)
    assert len(memory.spans()) == 3


def test_a_broken_cuda_api_is_counted_and_the_span_still_ends(memory) -> None:
    from cosyvoice_otel import errors

    class Broken:
        def Event(self, **kwargs):  # noqa: N802 - torch.cuda's name
            raise RuntimeError("driver gone")

    before = errors.ERRORS["gpu timing start"]
    stage = timed(memory, GpuTimer(Broken()))
    stage.end()
    assert errors.ERRORS["gpu timing start"] == before + 1 and len(memory.spans()) == 1


@pytest.mark.parametrize(("gpu_timing_value", "cuda_sync", "timed_"), [
    ("auto", False, True), ("events", False, True), ("off", False, False),
    ("events", True, False)])  # --cuda-sync is exact and serialised: it wins
def test_the_option_decides_whether_stages_are_timed(gpu_timing_value, cuda_sync, timed_,
                                                    monkeypatch) -> None:
    monkeypatch.setattr(gpu_timing, "_TIMER", None)
    settings = Settings.resolve({}, {})
    options = build_options({"gpu_timing": gpu_timing_value, "cuda_sync": cuda_sync}, settings)
    assert (options.gpu_timing is not None) is timed_
    if timed_:
        assert options.gpu_timing is gpu_timing.active_timer()  # one per process


def test_torch_cuda_is_none_without_torch_or_without_cuda(monkeypatch) -> None:
    import sys
    import types

    monkeypatch.setitem(sys.modules, "torch", None)
    assert gpu_timing.torch_cuda() is None
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True,
                                                            is_initialized=lambda: False))
    monkeypatch.setitem(sys.modules, "torch", fake)
    assert gpu_timing.torch_cuda() is None  # never initialises CUDA itself
    fake.cuda.is_initialized = lambda: True
    assert gpu_timing.torch_cuda() is fake.cuda
    fake.cuda.is_available = lambda: (_ for _ in ()).throw(RuntimeError("broken driver"))
    assert gpu_timing.torch_cuda() is None


# ------------------------------------------------------------------ the timer's bookkeeping

class Span:
    """A span stand-in: what the resolver set, and when it was ended."""

    def __init__(self) -> None:
        self.attributes: dict = {}
        self.ended_at: int | None = None

    def set_attribute(self, key, value) -> None:
        self.attributes[key] = value

    def end(self, end_time=None) -> None:
        self.ended_at = end_time


def test_a_new_timer_counts_nothing_and_defaults_to_auto(cuda) -> None:
    timer = GpuTimer(cuda)
    assert (timer.mode, timer.skipped, timer.resolved, timer._active, timer._generation) == (
        "auto", 0, 0, 0, 0)
    assert GpuTimer(cuda, mode="events").mode == "events"


def test_active_stages_and_exclusivity_are_counted_exactly(cuda) -> None:
    timer = GpuTimer(cuda)
    first = timer.start()
    assert (timer._active, first.generation) == (1, 1)
    second = timer.start()  # overlaps: not alone, so no peak of its own
    assert (timer._active, second.generation) == (2, -1)
    spans = [Span(), Span()]
    assert timer.end(spans[1], second, 10) and timer._active == 1
    assert timer.end(spans[0], first, 20) and timer._active == 0
    assert timer.end(Span(), first, 30) and timer._active == 0  # never below zero
    assert timer.drain(5)
    assert timer.resolved == 3
    # the first stage saw another start after it: its peak is not its own
    assert s.CUDA_PEAK_BYTES not in spans[0].attributes
    assert timer._thread.daemon and timer._thread.name == "cosyvoice-otel-gpu"


def test_a_peak_of_zero_is_still_reported(cuda) -> None:
    timer = GpuTimer(cuda)
    cuda.peak = 0
    mark = timer.start()
    cuda.gpu_ms = 1.23456
    span = Span()
    assert timer.end(span, mark, 99)
    assert timer.drain(5)
    assert span.attributes[s.CUDA_PEAK_BYTES] == 0
    assert span.attributes[s.GPU_PEAK_EXCLUSIVE] is True
    assert span.attributes[s.GPU_MS] == 1.235  # to the microsecond
    assert span.ended_at == 99


def test_a_full_queue_skips_the_stage_and_counts_it(cuda, monkeypatch) -> None:
    monkeypatch.setattr(gpu_timing, "MAX_PENDING", 1)
    timer = GpuTimer(cuda)
    cuda.ready.clear()  # the resolver waits on the first stage's event: the queue fills
    marks = [timer.start() for _ in range(4)]
    handed = [timer.end(Span(), mark, 1) for mark in marks]
    assert handed[0] and not all(handed)
    assert timer.skipped == handed.count(False)
    cuda.ready.set()
    assert timer.drain(5)


@pytest.mark.parametrize("where", ["end", "resolve"])
def test_a_failing_cuda_call_is_contained_and_noted_by_place(cuda, where, monkeypatch) -> None:
    noted = []
    monkeypatch.setattr(gpu_timing, "note_error", lambda place, exc: noted.append((place, exc)))
    timer = GpuTimer(cuda)
    mark = timer.start()
    boom = RuntimeError("driver")

    def fail(*_a, **_k):
        raise boom

    if where == "end":
        monkeypatch.setattr(cuda, "memory_allocated", fail)
    else:
        mark.start.elapsed_time = fail
    span = Span()
    handed = timer.end(span, mark, 7)
    if where == "end":
        assert handed is False and span.ended_at is None  # the caller ends it
    else:
        assert handed is True and timer.drain(5)
        assert span.ended_at == 7 and timer.resolved == 0  # ended anyway, not counted
    assert noted == [(f"gpu timing {where}", boom)]


def test_drain_waits_for_the_resolver_and_reports_what_is_left(cuda) -> None:
    timer = GpuTimer(cuda)
    cuda.ready.clear()
    mark = timer.start()
    assert timer.end(Span(), mark, 1)
    assert timer.drain(0.05) is False  # the event is not done: bounded, and says so
    cuda.ready.set()
    assert timer.drain(5) is True


def test_a_resolver_that_stopped_is_started_again(cuda) -> None:
    timer = GpuTimer(cuda)
    assert timer.end(Span(), timer.start(), 1) and timer.drain(5)
    first = timer._thread
    timer._queue.put(None)  # the resolver's stop signal
    first.join(5)
    span = Span()
    assert timer.end(span, timer.start(), 2) and timer.drain(5)
    assert timer._thread is not first and span.ended_at == 2


def test_where_cuda_is_gone_by_the_end_the_caller_ends_the_span(cuda, monkeypatch) -> None:
    """The stage began with CUDA (a mark) and, at its end, no CUDA is there: the resolver
    will not end the span, so end() says the caller must."""
    timer = GpuTimer(cuda=cuda)
    mark = timer.start()
    assert mark is not None
    timer._fixed = None  # from now on torch.cuda is looked up: none, on any machine
    monkeypatch.setattr(gpu_timing, "torch_cuda", lambda: None)
    assert timer.end(object(), mark, 0) is False
