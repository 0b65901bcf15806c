"""The Gradio queue bridge in memory, on stand-ins for gradio.queueing's Event and Queue (the
real Gradio 5.4 and 6.x runs are in test_e2e_gradio*.py): queue wait against a known clock,
the parent context, batches, the fallback to the request's headers, errors."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cosyvoice_otel import errors
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import gradio_bridge

from ..support.helpers import fake_monotonic


class Request:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


@pytest.fixture
def bridge(monkeypatch):
    """Stand-in Event/Queue classes wrapped by the bridge's own wrappers, a fake clock."""
    import types

    clock = fake_monotonic(monkeypatch, gradio_bridge, now=1000.0)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("cosyvoice_otel")
    seen: dict[str, object] = {}

    class Fn:
        api_name = "generate_audio"

    class Event:
        def __init__(self, request: Request | None = None, fn: object = None) -> None:
            self.fn = Fn() if fn is None else fn
            self.request = request

    class Queue:
        def start(self, *args, **kwargs) -> str:
            seen["start_context_span"] = trace.get_current_span().get_span_context()
            seen["start_args"] = (args, kwargs)
            return "started"

        async def process_events(self, events, batch=False) -> str:
            seen["inside"] = trace.get_current_span().get_span_context()
            seen["inside_context"] = context.get_current()
            seen["batch"] = batch
            if seen.get("raise"):
                raise RuntimeError("handler failed")
            return "processed"

    import wrapt

    state = {"enabled": True}
    enabled = lambda: state["enabled"]  # noqa: E731
    # the instrumentor's patch-table rows, applied by hand to stand-in classes
    Event.__init__ = wrapt.FunctionWrapper(Event.__init__,
                                           gradio_bridge.event_init(tracer, enabled))
    Queue.start = wrapt.FunctionWrapper(Queue.start, gradio_bridge.queue_start(tracer, enabled))
    Queue.process_events = wrapt.FunctionWrapper(Queue.process_events,
                                                 gradio_bridge.process_events(tracer, enabled))
    return types.SimpleNamespace(Event=Event, Queue=Queue, clock=clock, memory=memory,
                                 tracer=tracer, seen=seen, state=state)


def run(coro):
    return asyncio.run(coro)


def types_ns(**attributes):
    import types

    return types.SimpleNamespace(**attributes)


def test_the_queue_wait_is_the_time_between_enqueue_and_processing(bridge) -> None:
    with bridge.tracer.start_as_current_span("POST /queue/join") as join:
        event = bridge.Event()
    bridge.clock.now += 0.25  # the event waits 250 ms in the queue
    run(bridge.Queue().process_events([event]))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    assert span.attributes[s.QUEUE_WAIT_MS] == 250.0
    assert span.kind is SpanKind.CONSUMER
    assert span.parent.span_id == join.get_span_context().span_id
    assert span.attributes[s.GRADIO_FN] == "generate_audio"
    assert span.attributes[s.BATCH_SIZE] == 1
    # the handler ran inside the event's span
    assert bridge.seen["inside"].span_id == span.context.span_id


def test_a_batch_links_and_names_its_other_traces(bridge) -> None:
    events, trace_ids = [], []
    for _ in range(3):
        with bridge.tracer.start_as_current_span("POST /queue/join") as join:
            events.append(bridge.Event())
            trace_ids.append(f"{join.get_span_context().trace_id:032x}")
    run(bridge.Queue().process_events(events, batch=True))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    assert f"{span.context.trace_id:032x}" == trace_ids[0]
    assert span.attributes[s.BATCH_SIZE] == 3
    assert span.attributes[s.BATCH_TRACE_IDS] == ",".join(trace_ids[1:])
    assert [f"{link.context.trace_id:032x}" for link in span.links] == trace_ids[1:]


def test_a_batch_event_without_a_trace_is_neither_a_link_nor_a_named_trace(bridge) -> None:
    # the generated mutants (issue 31): an invalid context kept as a link is an all-zero
    # trace id in the tag and a link to nothing
    with bridge.tracer.start_as_current_span("POST /queue/join") as join:
        first = bridge.Event()
    untraced = bridge.Event()  # no span current, no request headers
    with bridge.tracer.start_as_current_span("POST /queue/join") as other:
        third = bridge.Event()
    run(bridge.Queue().process_events([first, untraced, third], batch=True))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    other_id = f"{other.get_span_context().trace_id:032x}"
    assert span.context.trace_id == join.get_span_context().trace_id
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [other_id]
    assert span.attributes[s.BATCH_TRACE_IDS] == other_id and span.attributes[s.BATCH_SIZE] == 3


def test_without_a_traced_join_the_client_trace_comes_from_the_request_headers(bridge) -> None:
    """The join route excluded from tracing: no span is current when the event is created."""
    client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{client_trace}-00f067aa0ba902b7-01"}
    event = bridge.Event(Request(headers))
    run(bridge.Queue().process_events([event]))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    assert f"{span.context.trace_id:032x}" == client_trace


def test_an_event_whose_request_carries_no_trace_starts_its_own(bridge) -> None:
    """Headers without a trace give a new root, whatever span happens to be current where the
    queue processes the event (the extraction starts from an empty context)."""
    event = bridge.Event(Request({"user-agent": "x"}))
    with bridge.tracer.start_as_current_span("unrelated") as unrelated:
        run(bridge.Queue().process_events([event]))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    assert span.parent is None
    assert span.context.trace_id != unrelated.get_span_context().trace_id


def test_the_queue_loop_starts_under_an_empty_context(bridge) -> None:
    with bridge.tracer.start_as_current_span("GET /startup-events"):
        bridge.Queue().start()
    assert not bridge.seen["start_context_span"].is_valid


def test_a_failing_handler_marks_the_event_and_still_raises(bridge) -> None:
    with bridge.tracer.start_as_current_span("POST /queue/join"):
        event = bridge.Event()
    bridge.seen["raise"] = True
    before = context.get_current()
    with pytest.raises(RuntimeError):
        run(bridge.Queue().process_events([event]))
    (span,) = [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[s.ERROR_TYPE] == "RuntimeError"
    assert context.get_current() == before


def events_spans(bridge) -> list:
    return [x for x in bridge.memory.get_finished_spans() if x.name == s.GRADIO_EVENT]


def test_arguments_and_results_pass_through_every_wrapper(bridge) -> None:
    with bridge.tracer.start_as_current_span("POST /queue/join"):
        event = bridge.Event(request=Request({}))  # keyword arguments reach __init__
    assert event.request.headers == {}
    queue = bridge.Queue()
    assert queue.start(1, key="v") == "started"
    assert bridge.seen["start_args"] == ((1,), {"key": "v"})
    assert asyncio.run(queue.process_events(events=[event], batch=True)) == "processed"
    assert bridge.seen["batch"] is True  # events given by keyword: still one event span
    assert len(events_spans(bridge)) == 1


def test_the_handler_runs_with_the_open_stage_scope_and_the_join_contexts_values(
        bridge) -> None:
    from opentelemetry import baggage

    from cosyvoice_otel.instrumentation.stage_span import OPEN_STAGES_KEY

    token = context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        with bridge.tracer.start_as_current_span("POST /queue/join"):
            event = bridge.Event()
    finally:
        context.detach(token)
    run(bridge.Queue().process_events([event]))
    inside = bridge.seen["inside_context"]
    assert baggage.get_baggage("tenant", inside) == "t1"
    assert context.get_value(OPEN_STAGES_KEY, inside) == []


@pytest.mark.parametrize(("fn", "expected"), [
    (types_ns(api_name="tts"), "tts"),
    (types_ns(api_name="", name="named"), "named"),
    (types_ns(api_name=None, name="named"), "named"),
    (types_ns(fn=lambda: None), "<lambda>"),
    (types_ns(api_name=3, fn=print), "print"),
    (types_ns(), "unknown"),
])
def test_the_event_is_named_by_its_api_name_then_name_then_function(bridge, fn,
                                                                    expected) -> None:
    run(bridge.Queue().process_events([bridge.Event(fn=fn)]))
    assert events_spans(bridge)[0].attributes[s.GRADIO_FN] == expected


def test_an_event_without_a_function_is_unknown(bridge) -> None:
    event = bridge.Event()
    del event.fn
    run(bridge.Queue().process_events([event]))
    assert events_spans(bridge)[0].attributes[s.GRADIO_FN] == "unknown"


def test_an_event_created_before_instrumentation_still_gets_a_span(bridge) -> None:
    """No remembered context, no enqueue time, no request: a root span without a wait."""
    bridge.state["enabled"] = False
    event = bridge.Event()
    bridge.state["enabled"] = True
    event.request = None
    run(bridge.Queue().process_events([event]))
    (span,) = events_spans(bridge)
    assert span.parent is None and s.QUEUE_WAIT_MS not in span.attributes


def test_disabled_bridge_and_empty_batches_make_no_span(bridge) -> None:
    bridge.state["enabled"] = False
    with bridge.tracer.start_as_current_span("GET /startup-events") as outer:
        bridge.Queue().start()
    assert bridge.seen["start_context_span"].span_id == outer.get_span_context().span_id
    assert run(bridge.Queue().process_events([bridge.Event()])) == "processed"
    bridge.state["enabled"] = True
    run(bridge.Queue().process_events([]))
    assert events_spans(bridge) == []


def test_the_wait_is_rounded_to_microseconds(bridge) -> None:
    with bridge.tracer.start_as_current_span("POST /queue/join"):
        event = bridge.Event()
    bridge.clock.now += 0.0012345678
    run(bridge.Queue().process_events([event]))
    assert events_spans(bridge)[0].attributes[s.QUEUE_WAIT_MS] == 1.235


def test_a_failure_inside_the_bridge_is_counted_and_the_app_still_runs(bridge,
                                                                        monkeypatch) -> None:

    before = dict(errors.ERRORS)

    class Sealed:
        __slots__ = ("fn", "request")

    sealed = Sealed()
    bridge.Event.__init__(sealed)  # setattr of our attributes fails on a slotted event
    assert errors.ERRORS["gradio Event.__init__"] == before.get("gradio Event.__init__", 0) + 1
    monkeypatch.setattr(gradio_bridge, "_fn_name", lambda event: 1 / 0)
    assert run(bridge.Queue().process_events([sealed])) == "processed"
    assert errors.ERRORS["gradio process_events"] == before.get("gradio process_events", 0) + 1
    assert events_spans(bridge) == []


def test_the_error_status_names_the_exception_class(bridge) -> None:
    bridge.seen["raise"] = True
    with pytest.raises(RuntimeError):
        run(bridge.Queue().process_events([bridge.Event()]))
    assert events_spans(bridge)[0].status.description == "RuntimeError"


def test_a_disabled_bridge_passes_arguments_through(bridge) -> None:
    bridge.state["enabled"] = False
    queue = bridge.Queue()
    assert queue.start(1, key="v") == "started"
    assert bridge.seen["start_args"] == ((1,), {"key": "v"})
    assert run(queue.process_events([bridge.Event()], batch=True)) == "processed"
    assert bridge.seen["batch"] is True


def test_the_callers_context_is_restored_after_start_and_after_processing(bridge) -> None:
    with bridge.tracer.start_as_current_span("GET /startup-events") as outer:
        bridge.Queue().start()
        assert trace.get_current_span() is outer

    async def main() -> bool:
        before = context.get_current()
        await bridge.Queue().process_events([bridge.Event()])
        return context.get_current() == before

    assert run(main())


def test_an_event_without_a_request_attribute_still_gets_a_span(bridge) -> None:
    bridge.state["enabled"] = False
    event = bridge.Event()
    bridge.state["enabled"] = True
    del event.request
    run(bridge.Queue().process_events([event]))
    assert len(events_spans(bridge)) == 1


def test_a_bridge_failure_is_logged_with_its_exception(bridge, monkeypatch, caplog) -> None:

    monkeypatch.setattr(errors, "_LOGGED", set())
    monkeypatch.setattr(gradio_bridge, "_fn_name", lambda event: 1 / 0)

    class Sealed:
        __slots__ = ("fn", "request")

    with caplog.at_level("WARNING", logger="cosyvoice_otel"):
        bridge.Event.__init__(Sealed())
        run(bridge.Queue().process_events([bridge.Event()]))
    messages = [r.getMessage() for r in caplog.records]
    assert any("gradio Event.__init__ (AttributeError" in m for m in messages), messages
    assert any("gradio process_events (ZeroDivisionError: division by zero)" in m
               for m in messages), messages
