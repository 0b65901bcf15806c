"""The Gradio queue bridge: one request, one trace (Gradio 5.4 and 6.x, no Gradio edits).

Without it, every queued handler's spans land under the one-off ``GET /gradio_api/startup-events``
span: ``Queue.start()`` runs in that request, and the processing loop and all the tasks it spawns
inherit its context. The bridge:

1. ``Event.__init__``: remembers the context current when the event is created (inside the
   ``/queue/join`` or ``/call/{api}`` request, so it carries the client's trace) and the time;
2. ``Queue.start``: runs under an EMPTY context, so the loop inherits nothing;
3. ``Queue.process_events``: attaches the first event's context and opens a ``gradio.event``
   span (CONSUMER: it starts after the join request has answered) with the queue wait and the
   batch size, and span links to the other events of a batch; detached in ``finally`` in the
   same task.

When the join route was not traced (excluded URL), the context is extracted from the request
headers instead, so the client's trace id is still kept.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from cosyvoice_otel import masking
from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import note_error
from cosyvoice_otel.instrumentation.stage_span import REASON_ATTR, enter_scope, exit_scope

CTX_ATTR = "_cosyvoice_otel_ctx"
TIME_ATTR = "_cosyvoice_otel_enqueued"


def _event_context(event: Any) -> context.Context:
    ctx = getattr(event, CTX_ATTR, None)
    if ctx is not None and trace.get_current_span(ctx).get_span_context().is_valid:
        return ctx
    request = getattr(event, "request", None)
    headers = getattr(request, "headers", None)
    if headers is not None:
        return propagate.extract(dict(headers.items()), context=context.Context())
    return context.Context()


def _fn_name(event: Any) -> str:
    fn = getattr(event, "fn", None)
    for attr in ("api_name", "name"):
        value = getattr(fn, attr, None)
        if isinstance(value, str) and value:
            return value
    inner = getattr(fn, "fn", None)
    return getattr(inner, "__name__", "unknown")


def _remember_inputs(event: Any, span: trace.Span) -> None:
    """The event's inputs (the texts typed into the UI, an uploaded file's name) are the
    request's own: registered for masking in its trace before any handler runs, so a handler
    that fails before the engine does (quoting its input) exports none of it."""
    try:
        trace_id = span.get_span_context().trace_id
        data = getattr(event, "data", None)
        values = getattr(data, "data", data)
        if trace_id and isinstance(values, (list, tuple)):
            masking.remember(trace_id, [_input(value) for value in values[:64]])
    except Exception as exc:  # noqa: BLE001 - the event's span is open: it must still end
        note_error("gradio event inputs", exc)


def _input(value: Any) -> Any:
    """A Gradio file input (``FileData``: path, url, orig_name, mime_type, meta...) is its
    names; anything else as it is."""
    if isinstance(value, dict) and ("orig_name" in value or "meta" in value):
        return [value.get(key) for key in ("orig_name", "path", "url")]
    return value


# The three wrappers, each made by a factory ``(tracer, enabled) -> wrapt wrapper``: rows of
# the instrumentor's patch table.

def event_init(tracer: trace.Tracer, enabled: Any) -> Any:
    """``Event.__init__``: remember the context of the request that queued the event."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        if enabled():
            try:
                setattr(instance, CTX_ATTR, context.get_current())
                setattr(instance, TIME_ATTR, time.monotonic())
            except Exception as exc:  # noqa: BLE001
                note_error("gradio Event.__init__", exc)
        return result

    return wrapper


def queue_start(tracer: trace.Tracer, enabled: Any) -> Any:
    """``Queue.start``: the processing loop inherits no request's context."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not enabled():
            return wrapped(*args, **kwargs)
        token = context.attach(context.Context())
        try:
            return wrapped(*args, **kwargs)
        finally:
            context.detach(token)

    return wrapper


def process_events(tracer: trace.Tracer, enabled: Any) -> Any:
    """``Queue.process_events``: one ``gradio.event`` span per run, under the first event's
    request; a request scope around it (what it leaves open ends as interrupted)."""

    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        events = kwargs.get("events", args[0] if args else None)
        if not enabled() or not events:
            return await wrapped(*args, **kwargs)
        try:
            first = events[0]
            parent = _event_context(first)
            links = [Link(trace.get_current_span(_event_context(e)).get_span_context())
                     for e in events[1:]]
            links = [link for link in links if link.context.is_valid]
            enqueued = getattr(first, TIME_ATTR, None)
            attributes: dict[str, AttributeValue] = {s.GRADIO_FN: _fn_name(first),
                                                     s.BATCH_SIZE: len(events)}
            if enqueued is not None:
                attributes[s.QUEUE_WAIT_MS] = round((time.monotonic() - enqueued) * 1000, 3)
            if links:  # Zipkin stores no links: name the batch's other traces in a tag too
                attributes[s.BATCH_TRACE_IDS] = ",".join(
                    f"{link.context.trace_id:032x}" for link in links)
            span = tracer.start_span(s.GRADIO_EVENT, context=parent, kind=SpanKind.CONSUMER,
                                     attributes=attributes, links=links)
            for event in events:  # the request's texts, masked from its first span on
                _remember_inputs(event, trace.get_current_span(_event_context(event))
                                 if event is not first else span)
            scope, token = enter_scope(trace.set_span_in_context(span, parent))
        except Exception as exc:  # noqa: BLE001
            note_error("gradio process_events", exc)
            return await wrapped(*args, **kwargs)
        try:
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            # a reason the app declared (fail(), then raise) wins over the exception's type
            reason = getattr(exc, REASON_ATTR, None) or type(exc).__name__
            span.set_status(Status(StatusCode.ERROR, reason))
            span.set_attribute(s.ERROR_TYPE, reason)
            raise
        finally:
            exit_scope(scope, token)
            span.end()

    return wrapper
