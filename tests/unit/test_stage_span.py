"""StageSpan's own rules in memory: error counting and logging, errors shown on the request's
top span, abandoned streams, argument lookup, and the CUDA path on a stand-in torch (no GPU
here; the real GPU run is a benchmark on the lent machine)."""

from __future__ import annotations

import types
from collections import Counter

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from cosyvoice_otel import errors
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import gpu_timing, stage_span
from cosyvoice_otel.instrumentation.stage_span import (
    OPEN_STAGES_KEY,
    Call,
    StageSpan,
    end_abandoned,
    note_error,
)


@pytest.fixture
def tracer():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return types.SimpleNamespace(tracer=provider.get_tracer("cosyvoice_otel"), memory=memory)


OPTIONS = types.SimpleNamespace(cuda_sync=False, gpu_timing=None, metrics=None)


def test_tracing_errors_are_counted_each_time_and_logged_once_per_place(caplog,
                                                                        monkeypatch) -> None:
    monkeypatch.setattr(errors, "ERRORS", Counter())
    monkeypatch.setattr(errors, "_LOGGED", set())
    with caplog.at_level("WARNING", logger="cosyvoice_otel"):
        note_error("here", ValueError("first"))
        note_error("here", ValueError("second"))
        note_error("there", KeyError("k"))
    assert errors.ERRORS == {"here": 2, "there": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: tracing error in here (ValueError: first); the app is unaffected",
        "cosyvoice-otel: tracing error in there (KeyError: 'k'); the app is unaffected"]


@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    ((1, 2), {"x": 3}, 1), ((), {"x": 3, "y": 4}, 3), ((), {}, "default")])
def test_call_first_is_the_first_positional_else_the_first_keyword(args, kwargs,
                                                                   expected) -> None:
    assert Call(None, args, kwargs, {}).first("default") == expected


def test_call_arg_by_keyword_position_or_default() -> None:
    call = Call(None, ("a", "b"), {"text": "k"}, {"text": 0, "speed": 1, "stream": 5})
    assert (call.arg("text"), call.arg("speed"), call.arg("stream", 9), call.arg("x")) == (
        "k", "b", 9, None)


def test_a_failure_is_recorded_on_the_stage_and_shown_on_the_request_span(tracer) -> None:
    with tracer.tracer.start_as_current_span("POST /request") as request:
        stage = StageSpan(tracer.tracer, "vocoder", context.get_current(), None, {}, OPTIONS)
        child = StageSpan(tracer.tracer, "inner", stage.ctx, None, {}, OPTIONS)
        assert child.request_span is request and child.parent is stage
        child.fail(RuntimeError("boom"))
        child.end()
        stage.end()
    spans = {x.name: x for x in tracer.memory.get_finished_spans()}
    inner = spans["inner"]
    assert inner.status.status_code is StatusCode.ERROR
    assert inner.status.description == "RuntimeError"
    assert inner.attributes[s.ERROR_TYPE] == "RuntimeError"
    (event,) = inner.events
    assert event.name == "exception" and event.attributes["exception.escaped"] == "True"
    assert (event.attributes["exception.type"], event.attributes["exception.message"]) == (
        "RuntimeError", "boom")
    top = spans["POST /request"]
    assert top.status.status_code is StatusCode.ERROR
    assert top.attributes[s.ERROR_TYPE] == "RuntimeError"
    assert spans["vocoder"].status.status_code is StatusCode.UNSET


def test_mark_error_skips_an_ended_request_span_and_adds_the_event(tracer) -> None:
    request = tracer.tracer.start_span("POST /request")
    request.end()  # already answered (a stream still producing)
    stage = StageSpan(tracer.tracer, "flow", trace.set_span_in_context(request), None, {},
                      OPTIONS)
    stage.mark_error("text_too_long", "input limit exceeded", {"limit.characters": 200})
    stage.end()
    flow = [x for x in tracer.memory.get_finished_spans() if x.name == "flow"][0]
    assert flow.status.description == "text_too_long"
    assert [(e.name, dict(e.attributes)) for e in flow.events] == [
        ("input limit exceeded", {"limit.characters": 200})]


def test_a_broken_span_in_fail_is_counted_not_raised(monkeypatch) -> None:
    monkeypatch.setattr(errors, "ERRORS", Counter())
    stage = StageSpan.__new__(StageSpan)
    stage.span = None  # record_exception on None raises inside fail()
    stage.fail(ValueError("x"))
    assert errors.ERRORS == {"StageSpan.fail": 1}


def test_end_abandoned_ends_only_what_is_open_and_marks_it(tracer) -> None:
    scope: list = []
    parent = context.set_value(OPEN_STAGES_KEY, scope)
    done = StageSpan(tracer.tracer, "done", parent, None, {}, OPTIONS)
    left = StageSpan(tracer.tracer, "left", parent, None, {}, OPTIONS)
    assert scope == [done, left]
    done.end()
    end_abandoned(scope)
    end_abandoned(scope)  # twice: still one end each
    spans = {x.name: x for x in tracer.memory.get_finished_spans()}
    assert len(tracer.memory.get_finished_spans()) == 2
    assert s.ABANDONED not in spans["done"].attributes
    assert spans["left"].attributes[s.ABANDONED] is True


class FakeCuda:
    def __init__(self, available=True, initialized=True) -> None:
        self.available, self.initialized = available, initialized
        self.calls: list[str] = []

    def is_available(self) -> bool:
        return self.available

    def is_initialized(self) -> bool:
        return self.initialized

    def synchronize(self) -> None:
        self.calls.append("synchronize")

    def reset_peak_memory_stats(self) -> None:
        self.calls.append("reset")

    def max_memory_allocated(self) -> float:
        return 1234.0


@pytest.mark.parametrize(("available", "initialized", "used"), [
    (True, True, True), (True, False, False), (False, True, False)])
def test_cuda_sync_only_where_cuda_is_in_use(tracer, monkeypatch, available, initialized,
                                              used) -> None:
    cuda = FakeCuda(available, initialized)
    monkeypatch.setitem(__import__("sys").modules, "torch", types.SimpleNamespace(cuda=cuda))
    stage = StageSpan(tracer.tracer, "vocoder", context.Context(), None, {},
                      types.SimpleNamespace(cuda_sync=True, metrics=None, gpu_timing=None))
    stage.end()
    (span,) = tracer.memory.get_finished_spans()
    if used:
        assert cuda.calls == ["reset", "synchronize"]
        assert span.attributes[s.CUDA_SYNCED] is True
        assert span.attributes[s.CUDA_PEAK_BYTES] == 1234
    else:
        assert cuda.calls == [] and s.CUDA_SYNCED not in span.attributes


def test_no_torch_and_a_broken_torch_mean_no_cuda(monkeypatch) -> None:
    monkeypatch.delitem(__import__("sys").modules, "torch", raising=False)
    assert gpu_timing.torch_cuda() is None

    class Broken:
        @property
        def cuda(self):
            raise RuntimeError("driver")

    monkeypatch.setitem(__import__("sys").modules, "torch", Broken())
    assert gpu_timing.torch_cuda() is None


def test_a_stage_joins_the_request_scope_of_its_context_its_parent_or_the_current_one(
        tracer) -> None:
    in_context: list = []
    scoped = context.set_value(OPEN_STAGES_KEY, in_context)
    first = StageSpan(tracer.tracer, "first", scoped, None, {}, OPTIONS)
    assert in_context == [first] and first.scope is in_context
    # a child made from a context WITHOUT the scope (a generator's call-time context) joins
    # its parent stage's scope
    orphan_ctx = context.set_value(stage_span.STAGE_KEY, first, context.Context())
    child = StageSpan(tracer.tracer, "child", orphan_ctx, None, {}, OPTIONS)
    assert in_context == [first, child]
    # no scope in its context and no parent: the scope current where it starts
    current: list = []
    token = context.attach(context.set_value(OPEN_STAGES_KEY, current))
    try:
        late = StageSpan(tracer.tracer, "late", context.Context(), None, {}, OPTIONS)
    finally:
        context.detach(token)
    assert current == [late] and late.scope is current
    alone = StageSpan(tracer.tracer, "alone", context.Context(), None, {}, OPTIONS)
    assert alone.scope is None
    end_abandoned(in_context + current)
    assert {sp.name for sp in tracer.memory.get_finished_spans()} == {"first", "child", "late"}


def test_span_clock_now_is_on_the_clock_the_span_started_on(monkeypatch) -> None:
    """Started at wall 5_000_000 ns when the monotonic clock read 1_000: 750 ns later on the
    monotonic clock is wall 5_000_750, whatever the wall clock says now."""
    ns = types.SimpleNamespace
    monkeypatch.setattr(stage_span, "time", ns(monotonic_ns=lambda: 1_750, time_ns=lambda: 42))
    assert stage_span.span_clock_now(ns(_cosyvoice_mono=1_000, _start_time=5_000_000)) == \
        5_000_750
    # a span the lifecycle did not clock (another tool's, or no start time): the wall clock
    assert stage_span.span_clock_now(ns(_start_time=5_000_000)) == 42
    assert stage_span.span_clock_now(ns(_cosyvoice_mono=1_000)) == 42


@pytest.mark.parametrize(("how", "zeros"), [("failed", True), ("abandoned", True),
                                            ("completed", False)])
def test_a_stage_that_failed_or_was_abandoned_still_has_the_schemas_figures(tracer, how,
                                                                            zeros) -> None:
    stage = StageSpan(tracer.tracer, s.VOCODER, context.Context(), None,
                      {s.MEL_FRAMES: 80}, OPTIONS)  # one figure written before the end
    if how == "failed":
        stage.fail(RuntimeError("x"))
    stage.end(abandoned=how == "abandoned")
    (span,) = tracer.memory.get_finished_spans()
    assert span.attributes[s.MEL_FRAMES] == 80  # never overwritten by a zero
    assert (span.attributes.get(s.AUDIO_SECONDS) == 0.0) is zeros


def test_a_stage_ends_once(tracer) -> None:
    stage = StageSpan(tracer.tracer, "flow", context.Context(), None, {}, OPTIONS)
    heard = []
    stage.on_end = lambda st, reason: heard.append(reason)
    stage.end()
    stage.end(abandoned=True)  # a second end (a scope closing after the stage) changes nothing
    assert heard == ["completed"]
    (span,) = tracer.memory.get_finished_spans()
    assert s.ABANDONED not in span.attributes


def test_a_stage_keeps_what_its_parent_context_carries_and_its_request_span(tracer) -> None:
    request = tracer.tracer.start_span("POST /request")
    parent_ctx = context.set_value("app.key", "kept", trace.set_span_in_context(request))
    with tracer.tracer.start_as_current_span("elsewhere"):  # current is not the parent
        stage = StageSpan(tracer.tracer, "flow", parent_ctx, None, {}, OPTIONS)
    assert context.get_value("app.key", stage.ctx) == "kept"
    assert stage.request_span is request


def test_a_failure_marked_after_the_stage_ended_still_shows_on_the_request(tracer) -> None:
    with tracer.tracer.start_as_current_span("POST /request"):
        stage = StageSpan(tracer.tracer, "flow", context.get_current(), None, {}, OPTIONS)
        stage.end()
        stage.mark_error("late_failure")
    request = next(x for x in tracer.memory.get_finished_spans() if x.name == "POST /request")
    assert request.attributes[s.ERROR_TYPE] == "late_failure"
