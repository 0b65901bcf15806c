"""The strict B3 propagator and the defer-aware sampler against the b3-propagation spec's cases.

Each row is one request's headers and what must follow: whether the caller's trace id is kept,
and the sampling decision at rate 0 and at rate 1 (keep-errors on, so a LOCAL drop is
RECORD_ONLY; an explicit deny is a DROP). Invalid rows differ from a valid one in exactly one
field, so a check that looks at the wrong field cannot pass them all.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler, StrictB3Propagator

from ..support.helpers import examples

T32, T16, S, P = "80f198ee56343ba864fe8b2a57d3eff7", "64fe8b2a57d3eff7", "e457b5a2e4d86bd1", \
    "05e3ac9a4f6e3b90"
NEW_TRACE = 0x0123456789ABCDEF0123456789ABCDEF  # the id the SDK would generate for a root

SAMPLE, DROP, RECORD = Decision.RECORD_AND_SAMPLE, Decision.DROP, Decision.RECORD_ONLY
KEPT_SAMPLED = (True, SAMPLE, SAMPLE)
KEPT_DENIED = (True, DROP, DROP)
KEPT_DEFERRED = (True, RECORD, SAMPLE)   # the local ratio decides
NEW_DENIED = (False, DROP, DROP)         # sampling state alone: "do not trace"
NEW_ACCEPTED = (False, SAMPLE, SAMPLE)   # sampling state alone: "trace"
IGNORED = (False, RECORD, SAMPLE)        # invalid: a fresh root, the local ratio decides


def multi(trace_id=T32, span_id=S, sampled=None, flags=None, parent=None) -> dict[str, str]:
    headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id, "X-B3-Sampled": sampled,
               "X-B3-Flags": flags, "X-B3-ParentSpanId": parent}
    return {k.lower(): v for k, v in headers.items() if v is not None}


CASES = [
    # --- multi, valid
    ("accept", multi(sampled="1"), KEPT_SAMPLED),
    ("accept, 64-bit trace", multi(trace_id=T16, sampled="1"), KEPT_SAMPLED),
    ("accept with parent", multi(sampled="1", parent=P), KEPT_SAMPLED),
    ("accept, legacy true", multi(sampled="true"), KEPT_SAMPLED),
    ("deny with ids", multi(sampled="0"), KEPT_DENIED),
    ("deny, legacy false", multi(sampled="false"), KEPT_DENIED),
    ("debug", multi(flags="1"), KEPT_SAMPLED),
    ("debug wins over deny", multi(sampled="0", flags="1"), KEPT_SAMPLED),
    ("flags 0 is not debug", multi(sampled="1", flags="0"), KEPT_SAMPLED),
    ("defer", multi(), KEPT_DEFERRED),
    ("defer with parent", multi(parent=P), KEPT_DEFERRED),
    # --- multi, sampling state only
    ("deny only", {"x-b3-sampled": "0"}, NEW_DENIED),
    ("deny only, flags 0", {"x-b3-sampled": "0", "x-b3-flags": "0"}, NEW_DENIED),
    ("deny only, legacy false", {"x-b3-sampled": "false"}, NEW_DENIED),
    ("accept only", {"x-b3-sampled": "1"}, NEW_ACCEPTED),
    ("accept only, legacy TRUE", {"x-b3-sampled": "TRUE"}, NEW_ACCEPTED),
    ("debug only", {"x-b3-flags": "1"}, NEW_ACCEPTED),
    ("debug only wins over deny", {"x-b3-sampled": "0", "x-b3-flags": "1"}, NEW_ACCEPTED),
    # --- multi, exactly one invalid field each
    ("trace id upper case", multi(trace_id=T32.upper(), sampled="1"), IGNORED),
    ("trace id 31 hex", multi(trace_id=T32[:-1], sampled="1"), IGNORED),
    ("trace id 15 hex", multi(trace_id=T16[:-1], sampled="1"), IGNORED),
    ("trace id not hex", multi(trace_id="g" + T32[1:], sampled="1"), IGNORED),
    ("trace id all zero", multi(trace_id="0" * 32, sampled="1"), IGNORED),
    ("span id upper case", multi(span_id=S.upper(), sampled="1"), IGNORED),
    ("span id 15 hex", multi(span_id=S[:-1], sampled="1"), IGNORED),
    ("span id 32 hex", multi(span_id=T32, sampled="1"), IGNORED),
    ("sampled maybe", multi(sampled="maybe"), IGNORED),
    ("sampled 2", multi(sampled="2"), IGNORED),
    ("flags 2", multi(sampled="1", flags="2"), IGNORED),
    ("parent upper case", multi(sampled="1", parent=P.upper()), IGNORED),
    ("parent 15 hex", multi(sampled="1", parent=P[:-1]), IGNORED),
    ("span id missing", {"x-b3-traceid": T32, "x-b3-sampled": "1"}, IGNORED),
    ("trace id missing", {"x-b3-spanid": S, "x-b3-sampled": "1"}, IGNORED),
    ("deny only, flags 2", {"x-b3-sampled": "0", "x-b3-flags": "2"}, IGNORED),
    ("sampled only, maybe", {"x-b3-sampled": "maybe"}, IGNORED),
    ("nothing", {}, IGNORED),
    # --- single, valid
    ("single accept", {"b3": f"{T32}-{S}-1"}, KEPT_SAMPLED),
    ("single accept, 64-bit", {"b3": f"{T16}-{S}-1"}, KEPT_SAMPLED),
    ("single accept with parent", {"b3": f"{T32}-{S}-1-{P}"}, KEPT_SAMPLED),
    ("single deny with ids", {"b3": f"{T32}-{S}-0"}, KEPT_DENIED),
    ("single debug", {"b3": f"{T32}-{S}-d"}, KEPT_SAMPLED),
    ("single defer", {"b3": f"{T32}-{S}"}, KEPT_DEFERRED),
    ("single deny only", {"b3": "0"}, NEW_DENIED),
    ("single accept only", {"b3": "1"}, NEW_ACCEPTED),
    ("single debug only", {"b3": "d"}, NEW_ACCEPTED),
    # --- single, exactly one invalid field each
    ("single trace upper", {"b3": f"{T32.upper()}-{S}-1"}, IGNORED),
    ("single trace 31", {"b3": f"{T32[:-1]}-{S}-1"}, IGNORED),
    ("single span upper", {"b3": f"{T32}-{S.upper()}-1"}, IGNORED),
    ("single span 15", {"b3": f"{T32}-{S[:-1]}-1"}, IGNORED),
    ("single sampled 2", {"b3": f"{T32}-{S}-2"}, IGNORED),
    ("single sampled true", {"b3": f"{T32}-{S}-true"}, IGNORED),
    ("single parent upper", {"b3": f"{T32}-{S}-1-{P.upper()}"}, IGNORED),
    ("single extra field", {"b3": f"{T32}-{S}-1-{P}-{P}"}, IGNORED),
    ("single state only 2", {"b3": "2"}, IGNORED),
    ("single trace only", {"b3": T32}, IGNORED),
    ("single empty", {"b3": ""}, IGNORED),
]


def outcome(headers: dict[str, str]) -> tuple[bool, Decision, Decision]:
    context = StrictB3Propagator().extract(headers, Context())
    parent = trace.get_current_span(context).get_span_context()
    trace_id = parent.trace_id if parent.is_valid else NEW_TRACE
    decisions = [DeferAwareRatioSampler(rate, keep_errors=True).should_sample(
        context, trace_id, "request").decision for rate in (0.0, 1.0)]
    kept = parent.is_valid and (f"{parent.trace_id:032x}".endswith(
        headers.get("x-b3-traceid", headers.get("b3", "-").split("-")[0])))
    return kept, decisions[0], decisions[1]


@pytest.mark.parametrize(("case", "headers", "expected"), CASES, ids=[c[0] for c in CASES])
def test_b3_decision_table(case: str, headers: dict[str, str], expected: tuple) -> None:
    assert outcome(headers) == expected


def test_a_deny_is_honoured_even_where_keep_errors_records_local_drops() -> None:
    sampler = DeferAwareRatioSampler(0.1, keep_errors=True)
    for headers in ({"b3": "0"}, {"x-b3-sampled": "0"}, multi(sampled="0")):
        context = StrictB3Propagator().extract(headers, Context())
        assert sampler.should_sample(context, NEW_TRACE, "r").decision is DROP, headers


class ListGetter:
    """A carrier whose headers may repeat: each key maps to the list of its values."""

    def get(self, carrier, key):
        return carrier.get(key)

    def keys(self, carrier):
        return list(carrier)


def test_repeated_different_values_are_trusted_neither() -> None:
    headers = {"x-b3-traceid": [T32, "a" * 32], "x-b3-spanid": [S], "x-b3-sampled": ["1"]}
    context = StrictB3Propagator().extract(headers, Context(), ListGetter())
    assert not trace.get_current_span(context).get_span_context().is_valid


# ------------------------------------------------------------------ properties: hostile input

HEX = "0123456789abcdef"
SINGLE_GRAMMAR = re.compile(r"(?:[01d]|(?:[0-9a-f]{16}|[0-9a-f]{32})-[0-9a-f]{16}"
                            r"(?:-[01d](?:-[0-9a-f]{16})?)?)")


@settings(max_examples=examples(300), deadline=None)
@given(st.text(st.sampled_from(list(HEX + "ABCDEFdg-_ 01\x00é")), max_size=90))
def test_property_single_header_accepts_exactly_the_grammar(value: str) -> None:
    context = StrictB3Propagator().extract({"b3": value}, Context())  # never raises
    parent = trace.get_current_span(context).get_span_context()
    valid = SINGLE_GRAMMAR.fullmatch(value.strip()) is not None
    has_ids = "-" in value.strip()
    if parent.is_valid:
        assert valid and has_ids
        assert f"{parent.trace_id:032x}".endswith(value.strip().split("-")[0])
    elif valid and has_ids:
        assert int(value.strip().split("-")[0], 16) == 0  # an all-zero id is invalid in OTel


@st.composite
def valid_single(draw) -> str:
    trace_id = draw(st.text(st.sampled_from(HEX), min_size=32, max_size=32)
                    | st.text(st.sampled_from(HEX), min_size=16, max_size=16))
    span_id = draw(st.text(st.sampled_from(HEX), min_size=16, max_size=16))
    parts = [trace_id, span_id]
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from("01d")))
        if draw(st.booleans()):
            parts.append(draw(st.text(st.sampled_from(HEX), min_size=16, max_size=16)))
    return "-".join(parts)


@settings(max_examples=examples(200), deadline=None)
@given(valid_single())
def test_property_every_valid_single_header_is_accepted(value: str) -> None:
    trace_id, span_id = value.split("-")[:2]
    context = StrictB3Propagator().extract({"b3": value}, Context())
    parent = trace.get_current_span(context).get_span_context()
    if int(trace_id, 16) and int(span_id, 16):
        assert parent.is_valid and parent.span_id == int(span_id, 16)


HEADER_VALUES = st.one_of(st.none(), st.text(max_size=40),
                          st.text(st.sampled_from(list(HEX)), min_size=15, max_size=33))


@settings(max_examples=examples(300), deadline=None)
@given(st.fixed_dictionaries({k: HEADER_VALUES for k in (
    "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "x-b3-parentspanid")}))
def test_property_multi_headers_never_raise_and_keep_only_lower_hex_ids(headers) -> None:
    headers = {k: v for k, v in headers.items() if v is not None}
    context = StrictB3Propagator().extract(headers, Context())
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid:
        assert re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", headers["x-b3-traceid"])
        assert re.fullmatch(r"[0-9a-f]{16}", headers["x-b3-spanid"])
        assert parent.span_id == int(headers["x-b3-spanid"], 16)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(max_size=80) | st.builds(
    lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
    st.text(st.sampled_from(list(HEX + "F")), min_size=2, max_size=2),
    st.text(st.sampled_from(list(HEX + "X")), min_size=31, max_size=33),
    st.text(st.sampled_from(list(HEX)), min_size=15, max_size=17),
    st.text(st.sampled_from(list(HEX)), min_size=2, max_size=2)))
def test_property_traceparent_never_raises_and_accepts_only_its_grammar(value: str) -> None:
    context = TraceContextTextMapPropagator().extract({"traceparent": value}, Context())
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid:
        version, trace_id, span_id = value.strip().split("-")[:3]
        assert re.fullmatch(r"[0-9a-f]{2}", version) and version != "ff"
        assert parent.trace_id == int(trace_id, 16) and parent.span_id == int(span_id, 16)


def test_the_given_context_is_kept_whatever_the_headers_say() -> None:
    """Values already in the context (baggage, other propagators' results) survive."""
    from opentelemetry.context import create_key, get_value, set_value

    key = create_key("earlier-propagator")
    given = set_value(key, "kept", Context())
    for headers in ({"b3": "0"}, {"x-b3-sampled": "1"}, multi(sampled="1"), multi(),
                    {"b3": f"{T32}-{S}"}, {"b3": "garbage"}, {}):
        assert get_value(key, StrictB3Propagator().extract(headers, given)) == "kept", headers


def test_a_deferred_context_is_remote_and_not_sampled() -> None:
    context = StrictB3Propagator().extract(multi(), Context())
    parent = trace.get_current_span(context).get_span_context()
    assert parent.is_remote is True and not parent.trace_flags.sampled
    assert parent.trace_state.get("cosyvoice") == "defer"


def test_repeated_identical_values_are_one_value() -> None:
    headers = {"x-b3-traceid": [T32, T32], "x-b3-spanid": [S], "x-b3-sampled": ["1", "1"]}
    context = StrictB3Propagator().extract(headers, Context(), ListGetter())
    assert trace.get_current_span(context).get_span_context().span_id == int(S, 16)


def test_the_callers_getter_reads_the_headers_of_any_carrier() -> None:
    """An instrumentation hands its own getter (ASGI: a list of byte pairs): every read, the
    SDK's B3 parser's included, goes through it."""
    from opentelemetry.propagators.textmap import Getter

    class PairsGetter(Getter):
        def get(self, carrier, key):
            found = [value for name, value in carrier if name == key]
            return found or None

        def keys(self, carrier):
            return [name for name, _ in carrier]

    trace_id, span_id = "a" * 32, "b" * 16
    carrier = [("x-b3-traceid", trace_id), ("x-b3-spanid", span_id)]  # no decision: deferred
    context = StrictB3Propagator().extract(carrier, Context(), getter=PairsGetter())
    span_context = trace.get_current_span(context).get_span_context()
    assert (f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}") == (trace_id,
                                                                                 span_id)
