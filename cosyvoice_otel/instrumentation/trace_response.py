"""The trace id back to the caller, so that a complaint can quote it.

HTTP: the SDK side installs the instrumentation's ``TraceResponsePropagator`` (the
``traceresponse`` header of W3C Trace Context level 2, written by the ASGI instrumentation on
every traced response; ``sdk/configurator.py``). gRPC has no response headers the
instrumentation writes: these two patches put the same value in the call's trailing metadata
(``traceresponse``), next to whatever the servicer sets itself.

Only ids leave: the version, the trace id, the server span's id and its sampled flag.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from cosyvoice_otel.errors import note_error

KEY = "traceresponse"
SPAN_ATTR = "_cosyvoice_otel_span"


def value(span: trace.Span) -> str | None:
    """``00-<trace id>-<span id>-<flags>`` of a valid span, else None."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _with_ours(instance: Any, metadata: Any) -> tuple[tuple[str, str], ...]:
    """The servicer's trailing metadata plus ours (once; a value of its own is kept)."""
    entries = tuple(metadata or ())
    span = getattr(instance, "_active_span", None)
    ours = value(span) if span is not None else None
    if ours is None or any(str(key).lower() == KEY for key, _ in entries):
        return entries
    return (*entries, (KEY, ours))


def servicer_context_init(tracer: trace.Tracer, enabled: Any) -> Any:
    """``_OpenTelemetryServicerContext.__init__`` (the gRPC server instrumentation's context
    of one call, holding its server span): the call's trailing metadata gets ``traceresponse``."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        if enabled():
            try:
                instance._servicer_context.set_trailing_metadata(_with_ours(instance, ()))
            except Exception as exc:  # noqa: BLE001
                note_error("grpc traceresponse", exc)
        return result

    return wrapper


def set_trailing_metadata(tracer: trace.Tracer, enabled: Any) -> Any:
    """``_OpenTelemetryServicerContext.set_trailing_metadata``: what the servicer sets replaces
    the call's trailing metadata; ours is added back to it."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if enabled() and len(args) == 1 and not kwargs:
            try:
                args = (_with_ours(instance, args[0]),)
            except Exception as exc:  # noqa: BLE001
                note_error("grpc traceresponse", exc)
        return wrapped(*args, **kwargs)

    return wrapper
