"""The trace id back to the caller (``--trace-response``, on by default): HTTP responses carry
``traceresponse`` (the SDK side installs the response propagator the ASGI instrumentation
writes with), a gRPC call the same in its trailing metadata (two patches). Launched apps:
tests/e2e/test_trace_response.py."""

from __future__ import annotations

import pytest
from opentelemetry.instrumentation import propagators
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor, trace_response
from cosyvoice_otel.sdk import configurator

from ..support.grpc_stub import inference_server
from ..support.helpers import new_span_id, new_trace_id


@pytest.fixture
def no_response_propagator():
    before = propagators.get_global_response_propagator()
    propagators.set_global_response_propagator(None)
    yield
    propagators.set_global_response_propagator(before)


@pytest.mark.parametrize(("setting", "installed"), [("true", True), ("false", False)])
def test_the_configurator_installs_the_response_propagator_when_on(
        setting, installed, process_settings, monkeypatch, no_response_propagator) -> None:
    process_settings({"COSYVOICE_TRACED_TRACE_RESPONSE": setting,
                      "COSYVOICE_TRACED_EXPORTER": "none", "COSYVOICE_TRACED_METRICS": "none"})
    monkeypatch.setattr(_OTelSDKConfigurator, "_configure", lambda self, **kw: None)
    monkeypatch.setattr(configurator.lifecycle, "install", lambda *a: None)
    configurator.CosyVoiceConfigurator()._configure()
    found = propagators.get_global_response_propagator()
    assert isinstance(found, propagators.TraceResponsePropagator) is installed
    assert (found is None) is not installed


def grpc_call(address: str, trace_id: str, span_id: str) -> tuple[bytes, dict]:
    import grpc

    with grpc.insecure_channel(address) as channel:
        method = channel.unary_stream("/cosyvoice.CosyVoice/Inference")
        call = method(b"req", metadata=[("traceparent", f"00-{trace_id}-{span_id}-01")],
                      timeout=20)
        body = b"".join(call)
        return body, dict(call.trailing_metadata() or ())


def traced_call(handler, on: bool, provider: TracerProvider) -> tuple[bytes, dict, str, str]:
    """One call to an in-process gRPC server traced by the gRPC server instrumentation and our
    instrumentor (``--trace-response`` ``on``): its body, trailing metadata, trace and parent."""
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=provider, trace_response=on, stage_spans=False)
    try:
        with inference_server(handler, (server_interceptor(tracer_provider=provider),)) as addr:
            trace_id, span_id = new_trace_id(), new_span_id()
            body, trailing = grpc_call(addr, trace_id, span_id)
    finally:
        inst.uninstrument()
    return body, trailing, trace_id, span_id


def servicer(own: bool):
    def handler(request, context):
        if own:
            context.set_trailing_metadata((("x-app", "kept"),))
        yield b"pcm"

    return handler


@pytest.mark.parametrize("own", [False, True])
def test_a_grpc_call_ends_with_its_trace_id_in_the_trailing_metadata(own) -> None:
    """Beside the servicer's own trailing metadata (kept), ``traceresponse`` names the call's
    trace and its server span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body, trailing, trace_id, span_id = traced_call(servicer(own), True, provider)
    assert body == b"pcm"
    (server,) = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert trailing[trace_response.KEY] == \
        f"00-{trace_id}-{server.context.span_id:016x}-01"
    assert server.parent.span_id == int(span_id, 16)
    assert ("x-app" in trailing) is own and trailing.get("x-app", "kept") == "kept"


def test_off_a_grpc_call_has_no_trace_id_in_its_trailing_metadata() -> None:
    _, trailing, _, _ = traced_call(servicer(True), False, TracerProvider())
    assert trace_response.KEY not in trailing and trailing["x-app"] == "kept"


class _Span:
    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def get_span_context(self):
        return self._ctx


def test_the_value_is_ids_only_and_none_for_an_invalid_span() -> None:
    from opentelemetry.trace import INVALID_SPAN, SpanContext, TraceFlags

    ctx = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(0))
    assert trace_response.value(_Span(ctx)) == f"00-{0xABC:032x}-{0xDEF:016x}-00"
    assert trace_response.value(INVALID_SPAN) is None
    # a servicer's own traceresponse is kept, never doubled
    inner = type("Ctx", (), {"_active_span": _Span(ctx)})()
    assert trace_response._with_ours(inner, (("TraceResponse", "mine"),)) == \
        (("TraceResponse", "mine"),)
    assert trace_response._with_ours(inner, None)[-1][0] == "traceresponse"
