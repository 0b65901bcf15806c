"""The sampling promise, whole: what leaves the process for a failing and for a good request,
for every kind of caller, rate, keep-errors and metrics setting. Wired as the configurator wires
it (our sampler, the SDK's processor that exports sampled spans only, keep-errors sharing the
exporter when the sampler records drops), with the caller's headers read by our propagators.

The rule (README "Configuration"): a caller's decision is obeyed (sampled: exported; "not
sampled" or a B3 deny: nothing leaves, failing or not, metrics or not); a trace we decide is
exported when the ratio keeps it, or when it fails and keep-errors is on. Metrics never change
what leaves the process."""

from __future__ import annotations

import itertools

import pytest
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cosyvoice_otel.sdk.configurator import add_error_keeping
from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler, StrictB3Propagator
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

# at rate 0.5 the ratio keeps a trace id whose low 64 bits are under 2**63
LUCKY = 0x0123456789ABCDEF_0000000000000001
UNLUCKY = 0x0123456789ABCDEF_FFFFFFFFFFFFFFF0
CALLER_SPAN = "00f067aa0ba902b7"

# header names as an HTTP server hands them to the propagators (lower case)
CALLERS = {
    "none": {},
    "sampled": {"traceparent": f"00-{{trace}}-{CALLER_SPAN}-01"},
    "not sampled": {"x-b3-traceid": "{trace}", "x-b3-spanid": CALLER_SPAN,
                    "x-b3-sampled": "0"},
    "not sampled (b3)": {"b3": f"{{trace}}-{CALLER_SPAN}-0"},
    "not sampled (w3c)": {"traceparent": f"00-{{trace}}-{CALLER_SPAN}-00"},
    "deny": {"b3": "0"},
    "deny (multi)": {"x-b3-sampled": "0"},
    "defer": {"x-b3-traceid": "{trace}", "x-b3-spanid": CALLER_SPAN},
}
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), StrictB3Propagator()])


class FixedIds(IdGenerator):
    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id
        self.spans = itertools.count(1)

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return next(self.spans)


def expected(caller: str, rate: float, lucky: bool, keep_errors: bool, failing: bool) -> bool:
    if caller == "sampled":
        return True
    if caller.startswith(("not sampled", "deny")):
        return False
    kept_by_ratio = rate == 1.0 or (rate == 0.5 and lucky)  # "none" and "defer": ours
    return kept_by_ratio or (failing and keep_errors)


CASES = [(caller, rate, lucky, keep, metrics, failing)
         for caller in CALLERS for rate in (0.0, 0.5, 1.0)
         for lucky in ((True, False) if rate == 0.5 else (True,))
         for keep in (False, True) for metrics in (False, True) for failing in (False, True)]


@pytest.mark.parametrize(("caller", "rate", "lucky", "keep_errors", "metrics", "failing"), CASES)
def test_what_leaves_the_process(caller, rate, lucky, keep_errors, metrics, failing) -> None:
    trace_id = LUCKY if lucky else UNLUCKY
    memory = InMemorySpanExporter()
    exporter = RedactingSpanExporter(memory)
    sampler = DeferAwareRatioSampler(rate, keep_errors=keep_errors, record_all=metrics)
    provider = TracerProvider(sampler=sampler, id_generator=FixedIds(trace_id))
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # sampled spans only
    keepers = add_error_keeping(provider, [exporter])
    headers = {k: v.format(trace=f"{trace_id:032x}") for k, v in CALLERS[caller].items()}
    ctx = PROPAGATOR.extract(headers)
    tracer = provider.get_tracer("cosyvoice_otel")
    with tracer.start_as_current_span("POST /inference_sft", context=ctx, kind=SpanKind.SERVER):
        with tracer.start_as_current_span("cosyvoice.inference") as stage:
            if failing:
                stage.set_status(Status(StatusCode.ERROR, "KeyError"))
    for keeper in keepers:
        keeper.force_flush(5000)
    exported = [span for span in memory.get_finished_spans()
                if span.context.trace_id == trace_id]
    assert bool(exported) is expected(caller, rate, lucky, keep_errors, failing), exported
    if exported:  # a trace leaves whole, never half
        assert {span.name for span in exported} == {"POST /inference_sft",
                                                    "cosyvoice.inference"}
    assert (keepers != []) == (keep_errors and rate < 1.0)
    provider.shutdown()
