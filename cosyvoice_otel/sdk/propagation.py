"""Strict B3 extraction with "defer", and the sampler that lets a deferred trace be decided here.

The stock B3 propagator (1) accepts upper-case and otherwise malformed ids and (2) turns a
MISSING sampled flag ("defer": the caller leaves the decision to us) into "not sampled", so a
parent-based sampler drops every such trace. ``StrictB3Propagator`` reads B3 single and multi:

* ids must be lower hex of the right length (trace 16 or 32, span 16), the sampled flag one of
  0/1/true/false/d; anything else is ignored whole and a fresh trace starts;
* a valid context without a sampled flag is marked deferred in its trace state
  (``cosyvoice=defer``), which ``DeferAwareRatioSampler`` reads: it samples that trace by the
  local ratio, and the marker is removed from the spans it creates;
* a sampling state WITHOUT ids (``b3: 0``, ``X-B3-Sampled: 0``: "do not trace"; ``b3: 1``/``d``,
  ``X-B3-Sampled: 1``, ``X-B3-Flags: 1``: "trace") is valid B3: a new trace starts and the
  sampler obeys it (a deny is honoured even with keep-errors). ``X-B3-Flags: 1`` (debug)
  implies accept, so it wins over ``X-B3-Sampled: 0``; ``X-B3-Flags`` may be ``0`` or ``1``.

Injection writes B3 multi headers (as ``b3multi``). Selected with ``--propagators`` name
``cosyvoice_b3`` (the default set is ``tracecontext,baggage,cosyvoice_b3``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from cosyvoice_otel.schema import SAMPLING_RATE

DEFER_KEY, DEFER_VALUE, RECORD_VALUE = "cosyvoice", "defer", "rec"
# recorded for the metrics only (a drop we must honour, measured but never exported)
METRICS_VALUE = "m"
_TRACE = re.compile(r"^(?:[0-9a-f]{16}|[0-9a-f]{32})$")
_SPAN = re.compile(r"^[0-9a-f]{16}$")
_SINGLE = re.compile(r"^(?P<trace>[0-9a-f]{16}|[0-9a-f]{32})-(?P<span>[0-9a-f]{16})"
                     r"(?:-(?P<sampled>[01d])(?:-(?P<parent>[0-9a-f]{16}))?)?$")
_SAMPLED = {"0", "1", "true", "false", "d"}
_FLAGS = {"0", "1"}
# a sampling decision that came without ids: "accept" or "deny" (read by the sampler)
DECISION_KEY = create_key("cosyvoice-b3-decision")
_SINGLE_DECISION = {"0": "deny", "1": "accept", "d": "accept"}


def _decision_only(sampled: str | None, flags: str | None) -> str | None:
    """The decision of an X-B3-Sampled / X-B3-Flags pair sent without ids; None if invalid."""
    if flags is not None and flags not in _FLAGS:
        return None
    if flags == "1":
        return "accept"  # debug implies accept
    if sampled is None:
        return None
    sampled = sampled.lower()
    if sampled in ("1", "true"):
        return "accept"
    if sampled in ("0", "false"):
        return "deny"
    return None


def _first(getter: Getter, carrier: Any, key: str) -> str | None:
    values = getter.get(carrier, key)
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        return "\x00conflict"  # repeated, different values: trust neither
    return values[0]


class _Stripped(Getter):
    """The carrier's values without blanks around them, for the upstream B3 parser too: what
    our checks accepted (after ``strip()``) is what it reads (a value with a trailing tab would
    otherwise lose its sampled flag, one with a leading blank its ids)."""

    def __init__(self, getter: Getter) -> None:
        self._getter = getter

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = self._getter.get(carrier, key)
        return None if values is None else [v.strip() if isinstance(v, str) else v
                                            for v in values]

    def keys(self, carrier: Any) -> list[str]:
        return self._getter.keys(carrier)


class StrictB3Propagator(TextMapPropagator):
    def __init__(self) -> None:
        self._b3 = B3MultiFormat()

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter = default_getter) -> Context:
        context = context if context is not None else Context()
        getter = _Stripped(getter)
        single = _first(getter, carrier, "b3")
        deferred = False
        if single is not None:
            if single in _SINGLE_DECISION:  # a sampling state alone: valid, no ids
                return set_value(DECISION_KEY, _SINGLE_DECISION[single], context)
            match = _SINGLE.match(single)
            if match is None:
                return context
            deferred = match.group("sampled") is None
        else:
            trace_id = _first(getter, carrier, "x-b3-traceid")
            span_id = _first(getter, carrier, "x-b3-spanid")
            sampled = _first(getter, carrier, "x-b3-sampled")
            flags = _first(getter, carrier, "x-b3-flags")
            if trace_id is None and span_id is None:
                decision = _decision_only(sampled, flags)
                return context if decision is None else set_value(DECISION_KEY, decision,
                                                                  context)
            parent = _first(getter, carrier, "x-b3-parentspanid")
            if (not trace_id or not _TRACE.match(trace_id) or not span_id
                    or not _SPAN.match(span_id)
                    or (sampled is not None and sampled.lower() not in _SAMPLED)
                    or (flags is not None and flags not in _FLAGS)
                    or (parent is not None and not _SPAN.match(parent))):
                return context
            deferred = sampled is None and flags is None
        extracted = self._b3.extract(carrier, context, getter)
        if not deferred:
            return extracted
        span_context = trace.get_current_span(extracted).get_span_context()
        if not span_context.is_valid:
            return context
        marked = trace.SpanContext(span_context.trace_id, span_context.span_id, is_remote=True,
                                   trace_flags=span_context.trace_flags,
                                   trace_state=span_context.trace_state.add(DEFER_KEY,
                                                                            DEFER_VALUE))
        return trace.set_span_in_context(trace.NonRecordingSpan(marked), context)

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter = default_setter) -> None:
        self._b3.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self._b3.fields


class DeferAwareRatioSampler(Sampler):
    """Parent-based trace-id ratio where WE decide (a root, or a parent that deferred) and,
    with ``keep_errors``, a local "drop" becomes RECORD_ONLY (marked ``cosyvoice=rec`` in the
    trace state, which the local children inherit) so ``ErrorKeepingProcessor`` can still export
    the trace if it fails. A remote "not sampled" is honoured: never exported; so is a B3 decision
    sent without ids (``DECISION_KEY``). With ``record_all`` (metrics on), every drop is
    RECORD_ONLY instead of DROP, so the wrappers measure every request; what keep-errors does
    not claim is marked ``cosyvoice=m`` and never leaves the process (the batch processor
    exports sampled spans only; keep-errors buffers ``rec`` ones only)."""

    def __init__(self, rate: float, keep_errors: bool = False, record_all: bool = False) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sampling rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.keep_errors = keep_errors
        self.record_all = record_all
        self._ratio = TraceIdRatioBased(rate)
        self._parent_based = ParentBased(self._ratio)

    @property
    def records_drops(self) -> bool:
        """Whether local drops are recorded for keep-errors (``ErrorKeepingProcessor``)."""
        return self.keep_errors and self.rate < 1.0

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None,
                      trace_state: TraceState | None = None) -> SamplingResult:
        # A recorded span gets its start attributes from the result: RECORD_ONLY results carry
        # them too (without, a kept failed trace or a metric would lose e.g. cosyvoice.mode).
        result = self._decide(parent_context, trace_id, name, kind, attributes, links,
                              trace_state)
        if result.decision is not Decision.DROP or not self.record_all:
            return result
        state = result.trace_state or TraceState()
        if state.get(DEFER_KEY) is None:
            state = state.add(DEFER_KEY, METRICS_VALUE)
        return SamplingResult(Decision.RECORD_ONLY, attributes, state)

    def _decide(self, parent_context: Context | None, trace_id: int, name: str,
                kind: SpanKind | None, attributes: Attributes, links: Sequence[Link] | None,
                trace_state: TraceState | None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid and not parent.is_remote and parent.trace_flags.sampled:
            # the common case (every stage span): a local sampled parent. What ParentBased
            # answers, without its layers: this runs for every span the app makes.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
        marker = parent.trace_state.get(DEFER_KEY) if parent.is_valid else None
        if (parent.is_valid and not parent.is_remote
                and marker in (RECORD_VALUE, METRICS_VALUE)):
            return SamplingResult(Decision.RECORD_ONLY, attributes, parent.trace_state)
        if parent.is_valid and marker != DEFER_VALUE:
            return self._parent_based.should_sample(parent_context, trace_id, name, kind,
                                                    attributes, links, trace_state)
        if not parent.is_valid:  # a root: obey a B3 decision that came without ids
            decision = get_value(DECISION_KEY, parent_context)
            if decision == "deny":
                return SamplingResult(Decision.DROP, None, TraceState())
            if decision == "accept":
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, TraceState())
        # our decision: a new root, or a remote parent that deferred to us
        state = parent.trace_state.delete(DEFER_KEY) if marker else TraceState()
        result = self._ratio.should_sample(parent_context, trace_id, name, kind, attributes,
                                           links)
        if self.rate < 1.0:  # the trace says it is a sample (report's note; unbiased: metrics)
            attributes = {**(attributes or {}), SAMPLING_RATE: self.rate}
        if result.decision is Decision.DROP and self.keep_errors:
            return SamplingResult(Decision.RECORD_ONLY, attributes,
                                  state.add(DEFER_KEY, RECORD_VALUE))
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.DROP, None, state)
        return SamplingResult(result.decision, attributes, state)

    def get_description(self) -> str:
        return (f"DeferAwareRatioSampler{{{self._ratio.get_description()}, "
                f"keep_errors={self.keep_errors}, record_all={self.record_all}}}")


def sampler_factory(arg: str | None) -> Sampler:
    """Entry point ``cosyvoice_ratio``: OTEL_TRACES_SAMPLER_ARG is the rate (default 1.0);
    ``COSYVOICE_TRACED_KEEP_ERRORS`` (default true) turns local drops into RECORD_ONLY."""
    try:
        rate = float(arg) if arg not in (None, "") else 1.0
    except ValueError:
        rate = 1.0
    from cosyvoice_otel.settings import current

    settings = current()
    return DeferAwareRatioSampler(rate, keep_errors=settings.keep_errors,
                                  record_all=settings.metrics != "none")


__all__ = ["StrictB3Propagator", "DeferAwareRatioSampler", "sampler_factory", "Decision"]
