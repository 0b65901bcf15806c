"""The defer-aware ratio sampler, table-driven (in the style of the SDK's test_sampling.py):
each kind of parent, with and without keep-errors, at rate 0 and 1; plus the entry point and
B3 injection."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.context import Context, set_value
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from cosyvoice_otel.schema import SAMPLING_RATE
from cosyvoice_otel.sdk.propagation import (
    DECISION_KEY,
    DEFER_KEY,
    DEFER_VALUE,
    METRICS_VALUE,
    RECORD_VALUE,
    DeferAwareRatioSampler,
    StrictB3Propagator,
    sampler_factory,
)

TRACE_ID = 0x80F198EE56343BA864FE8B2A57D3EFF7
SAMPLE, DROP, RECORD = Decision.RECORD_AND_SAMPLE, Decision.DROP, Decision.RECORD_ONLY
OTHER = TraceState([("vendor", "x")])


def parent(remote: bool, sampled: bool, state: TraceState = OTHER) -> Context:
    ctx = SpanContext(TRACE_ID, 0xE457B5A2E4D86BD1, is_remote=remote,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
                      trace_state=state)
    return trace.set_span_in_context(trace.NonRecordingSpan(ctx))


ROOT = Context()
CASES = [
    # name, parent context, rate, keep-errors, decision, trace state of the result
    ("root, rate 1", ROOT, 1.0, False, SAMPLE, {}),
    ("root, rate 0", ROOT, 0.0, False, DROP, {}),
    ("root, rate 0, keep-errors", ROOT, 0.0, True, RECORD, {DEFER_KEY: RECORD_VALUE}),
    ("remote sampled", parent(True, True), 0.0, True, SAMPLE, {"vendor": "x"}),
    ("remote not sampled", parent(True, False), 1.0, True, DROP, {"vendor": "x"}),
    ("remote not sampled, no keep", parent(True, False), 1.0, False, DROP, {"vendor": "x"}),
    ("local sampled", parent(False, True), 0.0, True, SAMPLE, {"vendor": "x"}),
    ("local dropped", parent(False, False), 1.0, True, DROP, {"vendor": "x"}),
    ("local record-only", parent(False, False, OTHER.add(DEFER_KEY, RECORD_VALUE)), 1.0, True,
     RECORD, {"vendor": "x", DEFER_KEY: RECORD_VALUE}),
    ("a remote 'rec' is not ours", parent(True, False, OTHER.add(DEFER_KEY, RECORD_VALUE)),
     1.0, True, DROP, {"vendor": "x", DEFER_KEY: RECORD_VALUE}),
    ("remote deferred, rate 1", parent(True, False, OTHER.add(DEFER_KEY, DEFER_VALUE)), 1.0,
     True, SAMPLE, {"vendor": "x"}),
    ("remote deferred, rate 0, keep", parent(True, False, OTHER.add(DEFER_KEY, DEFER_VALUE)),
     0.0, True, RECORD, {"vendor": "x", DEFER_KEY: RECORD_VALUE}),
    ("remote deferred, rate 0", parent(True, False, OTHER.add(DEFER_KEY, DEFER_VALUE)), 0.0,
     False, DROP, {"vendor": "x"}),
    ("B3 deny without ids", set_value(DECISION_KEY, "deny", ROOT), 1.0, True, DROP, {}),
    ("B3 accept without ids", set_value(DECISION_KEY, "accept", ROOT), 0.0, True, SAMPLE, {}),
]


@pytest.mark.parametrize(("case", "ctx", "rate", "keep", "decision", "state"), CASES,
                         ids=[c[0] for c in CASES])
def test_decision_table(case, ctx, rate, keep, decision, state) -> None:
    attributes = {"http.method": "GET"}
    result = DeferAwareRatioSampler(rate, keep_errors=keep).should_sample(
        ctx, TRACE_ID, "request", trace.SpanKind.SERVER, attributes, None, None)
    assert result.decision is decision
    assert dict(result.trace_state or {}) == state
    if decision is not DROP:  # attributes pass through to the span, recorded-only too
        assert {k: v for k, v in result.attributes.items() if k != SAMPLING_RATE} == attributes


# With metrics on (record_all), every DROP above becomes RECORD_ONLY, so the wrappers measure
# every request; what keep-errors does not claim is marked "m" (never exported).
RECORD_ALL_CASES = [
    # name, parent context, rate, keep-errors, trace state of the result
    ("root, rate 0", ROOT, 0.0, False, {DEFER_KEY: METRICS_VALUE}),
    ("root, rate 0, keep-errors: keep-errors claims it", ROOT, 0.0, True,
     {DEFER_KEY: RECORD_VALUE}),
    ("remote not sampled", parent(True, False), 1.0, True,
     {"vendor": "x", DEFER_KEY: METRICS_VALUE}),
    ("a remote 'rec' stays theirs", parent(True, False, OTHER.add(DEFER_KEY, RECORD_VALUE)), 1.0,
     True, {"vendor": "x", DEFER_KEY: RECORD_VALUE}),
    ("local metrics-only parent", parent(False, False, OTHER.add(DEFER_KEY, METRICS_VALUE)), 1.0,
     False, {"vendor": "x", DEFER_KEY: METRICS_VALUE}),
    ("remote deferred, rate 0", parent(True, False, OTHER.add(DEFER_KEY, DEFER_VALUE)), 0.0,
     False, {"vendor": "x", DEFER_KEY: METRICS_VALUE}),
    ("B3 deny without ids", set_value(DECISION_KEY, "deny", ROOT), 1.0, True,
     {DEFER_KEY: METRICS_VALUE}),
]


@pytest.mark.parametrize(("case", "ctx", "rate", "keep", "state"), RECORD_ALL_CASES,
                         ids=[c[0] for c in RECORD_ALL_CASES])
def test_with_metrics_every_drop_is_recorded(case, ctx, rate, keep, state) -> None:
    attributes = {"cosyvoice.mode": "sft"}
    result = DeferAwareRatioSampler(rate, keep_errors=keep, record_all=True).should_sample(
        ctx, TRACE_ID, "request", trace.SpanKind.SERVER, attributes, None, None)
    assert result.decision is RECORD
    assert dict(result.trace_state) == state
    assert {k: v for k, v in result.attributes.items() if k != SAMPLING_RATE} == attributes


@pytest.mark.parametrize(("ctx", "rate", "tagged"), [
    (ROOT, 0.0, True), (ROOT, 0.5, True), (ROOT, 1.0, False),
    (parent(True, True), 0.5, False),  # someone else decided: not our sample
    (parent(True, False, OTHER.add(DEFER_KEY, DEFER_VALUE)), 0.0, True),
    (set_value(DECISION_KEY, "accept", ROOT), 0.5, False)])
def test_a_trace_we_sampled_below_1_says_its_rate(ctx, rate, tagged) -> None:
    result = DeferAwareRatioSampler(rate, keep_errors=True).should_sample(
        ctx, TRACE_ID, "request", trace.SpanKind.SERVER, {"a": 1}, None, None)
    assert (result.attributes or {}).get(SAMPLING_RATE) == (rate if tagged else None)


def test_with_metrics_a_sampled_decision_is_unchanged() -> None:
    result = DeferAwareRatioSampler(1.0, record_all=True).should_sample(
        ROOT, TRACE_ID, "request", trace.SpanKind.SERVER, {}, None, None)
    assert result.decision is SAMPLE and dict(result.trace_state or {}) == {}


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan")])
def test_a_rate_outside_0_1_is_refused(rate) -> None:
    with pytest.raises(ValueError, match=r"sampling rate must be in \[0, 1\]"):
        DeferAwareRatioSampler(rate)


def test_description_and_what_the_configurator_reads() -> None:
    sampler = DeferAwareRatioSampler(0.25, keep_errors=True)
    assert sampler.rate == 0.25 and sampler.records_drops
    assert sampler.get_description() == (
        "DeferAwareRatioSampler{TraceIdRatioBased{0.25}, keep_errors=True, record_all=False}")
    assert not DeferAwareRatioSampler(1.0, keep_errors=True).records_drops
    assert not DeferAwareRatioSampler(0.5, keep_errors=False).records_drops


@pytest.mark.parametrize(("arg", "keep", "rate", "keeps"), [
    (None, None, 1.0, True), ("", "false", 1.0, False), ("0.25", "TRUE", 0.25, True),
    ("not-a-number", " off ", 1.0, False), ("0", "no", 0.0, False), ("1", "0", 1.0, False),
    ("0.5", "yes", 0.5, True)])
def test_the_entry_point_reads_its_argument_and_keep_errors(monkeypatch, arg, keep, rate,
                                                            keeps) -> None:
    if keep is None:
        monkeypatch.delenv("COSYVOICE_TRACED_KEEP_ERRORS", raising=False)
    else:
        monkeypatch.setenv("COSYVOICE_TRACED_KEEP_ERRORS", keep)
    monkeypatch.delenv("COSYVOICE_TRACED_METRICS", raising=False)
    sampler = sampler_factory(arg)
    assert (sampler.rate, sampler.keep_errors, sampler.record_all) == (rate, keeps, False)


@pytest.mark.parametrize(("metrics", "record_all"), [("prometheus", True), ("otlp", True),
                                                     ("none", False)])
def test_the_entry_point_records_everything_when_metrics_are_on(monkeypatch, metrics,
                                                                record_all) -> None:
    monkeypatch.setenv("COSYVOICE_TRACED_METRICS", metrics)
    assert sampler_factory("0.1").record_all is record_all


def test_injection_writes_b3_multi_headers() -> None:
    ctx = SpanContext(TRACE_ID, 0xE457B5A2E4D86BD1, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    carrier: dict[str, str] = {}
    propagator = StrictB3Propagator()
    propagator.inject(carrier, trace.set_span_in_context(trace.NonRecordingSpan(ctx)))
    assert carrier == {"x-b3-traceid": f"{TRACE_ID:032x}", "x-b3-spanid": "e457b5a2e4d86bd1",
                       "x-b3-sampled": "1"}
    assert propagator.fields == {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}
    extracted = StrictB3Propagator().extract(carrier)  # no context given: a fresh one
    assert trace.get_current_span(extracted).get_span_context().span_id == 0xE457B5A2E4D86BD1


@pytest.mark.parametrize(("case", "ctx", "rate", "keep", "decision", "state"), CASES,
                         ids=[c[0] for c in CASES])
def test_no_decision_writes_a_log_line(caplog, case, ctx, rate, keep, decision, state) -> None:
    """The sampler runs for every span: nothing it does may log (the API's TraceState logs a
    warning for deleting a key it does not hold, so a root's state is made, not trimmed)."""
    import logging

    with caplog.at_level(logging.DEBUG):
        DeferAwareRatioSampler(rate, keep_errors=keep).should_sample(ctx, TRACE_ID, "span")
    assert caplog.records == []
