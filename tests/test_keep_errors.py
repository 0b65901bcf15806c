"""Keep-errors in memory: the EXACT set of spans exported for a failed trace, with the error
arriving late and a span ending after the root (a Gradio event after its join request)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from cosyvoice_otel.pipeline.keep_errors import ErrorKeepingProcessor
from cosyvoice_otel.pipeline.propagation import DeferAwareRatioSampler


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
