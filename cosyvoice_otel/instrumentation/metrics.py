"""TTS metrics from every request, recorded where the stage spans end (no second instrumentation).

Sampling decides which traces leave the process; metrics must not depend on it. With metrics on,
the sampler RECORDS the requests it drops (``DeferAwareRatioSampler(record_drops=True)``), so the
same wrappers measure every request, and the SDK's batch processor still exports only the sampled
ones: nothing more leaves the process than without metrics.

Each observation is made with the stage's context, so the SDK's ``trace_based`` exemplar filter
(its default) attaches the trace id of a SAMPLED request to the histogram bucket it fell in: a
slow bucket on /metrics links to a trace that exists in Zipkin.

Labels are bounded by construction: the stage map's span names (a stage the app did not declare
is ``undeclared``), the six modes, booleans, ``error.type`` (a listed or declared reason, an
exception class name, else ``undeclared``) and the configured service version.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation.stage_span import span_attributes

if TYPE_CHECKING:
    from cosyvoice_otel.instrumentation.stage_span import StageSpan

# Bucket boundaries that suit TTS: a cached short sentence answers in tens of ms, a long
# zero-shot paragraph on a busy GPU in tens of seconds.
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
# around 1.0 most finely: a stream whose RTF crosses 1 starts to stall
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0,
               4.0)
# 0 is a bucket of its own: the smooth streams
STALL_BUCKETS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TOKEN_RATE_BUCKETS = (5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0)


class TtsMetrics:
    """The request and stage instruments, fed by ``StageSpan.end`` (``stage_ended``)."""

    def __init__(self, meter: metrics.Meter, service_version: str | None = None) -> None:
        # name, unit and description from the schema's metric table (one source of truth)
        table = {m.name: m for m in s.METRICS}

        def histogram(name: str, buckets: tuple[float, ...]) -> Any:
            row = table[name]
            return meter.create_histogram(name, unit=row.unit, description=row.meaning,
                                          explicit_bucket_boundaries_advisory=list(buckets))

        def counter(name: str) -> Any:
            row = table[name]
            return meter.create_counter(name, unit=row.unit, description=row.meaning)

        self.request_duration = histogram(s.REQUEST_DURATION, SECONDS_BUCKETS)
        self.first_audio = histogram(s.TIME_TO_FIRST_AUDIO, SECONDS_BUCKETS)
        self.rtf = histogram(s.RTF_METRIC, RTF_BUCKETS)
        self.stage_duration = histogram(s.STAGE_DURATION, SECONDS_BUCKETS)
        self.token_rate = histogram(s.LLM_TOKEN_RATE, TOKEN_RATE_BUCKETS)
        self.stall = histogram(s.PLAYBACK_STALL, STALL_BUCKETS)
        self.ttft = histogram(s.GENAI_SERVER_TTFT, SECONDS_BUCKETS)
        self.requests = counter(s.REQUESTS)
        self.errors = counter(s.ERRORS)
        self.base = {s.SERVICE_VERSION: service_version} if service_version else {}

    def stage_ended(self, stage: StageSpan) -> None:
        """One stage ended (its extractor has written its attributes): record it."""
        seconds = time.monotonic() - stage.started
        attrs = span_attributes(stage.span)
        request = stage.find(s.INFERENCE)
        request_attrs = span_attributes(request.span) if request is not None else attrs
        labels = dict(self.base)
        for key in (s.MODE, s.WARMUP):
            value = request_attrs.get(key)
            if value is not None:
                labels[key] = value
        # a reason nobody declared is "undeclared" (an app's fail() may pass any string)
        error = s.metric_reason(attrs.get(s.ERROR_TYPE))
        ctx = stage.ctx  # the stage's span is current in it: exemplars carry its trace id
        # a stage nobody declared is "undeclared": the label's values stay a bounded set
        name = stage.name if s.known_stage(stage.name) else s.UNDECLARED
        self.stage_duration.record(seconds, _with(labels, s.STAGE, name, s.ERROR_TYPE, error),
                                   context=ctx)
        if stage.name == s.INFERENCE:
            self._request_ended(seconds, attrs, labels, error, ctx)
            ttft = stage.counters.get("ttft")
            if ttft is not None:
                self.ttft.record(ttft, _with(_without(labels, s.WARMUP),
                                             s.GENAI_OPERATION, "text_to_speech",
                                             s.GENAI_PROVIDER, "cosyvoice"), context=ctx)
        elif stage.name == s.ACOUSTIC_MODEL:
            rate = attrs.get(s.TOKENS_PER_SECOND)
            if rate is not None:
                self.token_rate.record(rate, labels, context=ctx)

    def _request_ended(self, seconds: float, attrs: Any, labels: dict[str, Any],
                       error: str | None, ctx: Any) -> None:
        stream = attrs.get(s.STREAM)
        if stream is not None:
            labels[s.STREAM] = stream
        outcome = _with(labels, s.ERROR_TYPE, error)
        self.request_duration.record(seconds, outcome, context=ctx)
        self.requests.add(1, outcome)
        if error is not None:
            self.errors.add(1, _with(self.base, s.ERROR_TYPE, error, s.MODE,
                                     labels.get(s.MODE)))
        first_ms = attrs.get(s.FIRST_CHUNK_MS)
        if first_ms is not None:
            self.first_audio.record(first_ms / 1000.0, labels, context=ctx)
        rtf = attrs.get(s.RTF)
        if rtf is not None:
            self.rtf.record(rtf, labels, context=ctx)
        stall = attrs.get(s.PLAYBACK_STALL_MS)
        if stall is not None:
            self.stall.record(stall / 1000.0, _without(labels, s.STREAM), context=ctx)


def _with(labels: dict[str, Any], *pairs: Any) -> dict[str, Any]:
    """``labels`` plus the given key/value pairs whose value is not None."""
    out = dict(labels)
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if value is not None:
            out[key] = value
    return out


def _without(labels: dict[str, Any], key: str) -> dict[str, Any]:
    """``labels`` less one (a metric whose schema row does not list it)."""
    return {k: v for k, v in labels.items() if k != key}


def create(meter_provider: Any = None, service_version: str | None = None) -> TtsMetrics:
    from cosyvoice_otel.version import __version__

    meter = metrics.get_meter("cosyvoice_otel", __version__, meter_provider=meter_provider)
    return TtsMetrics(meter, service_version)
