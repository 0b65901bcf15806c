"""Redaction in memory: what every exporter would encode after ``RedactingSpanExporter``.

Texts are registered the way the stage extractors do (``masking.remember``), then third-party
spans quote them the way exception messages, logs and URLs do; each exporter's encoding is
decoded back (``leaks.py``) and searched.
"""

from __future__ import annotations

import string
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from cosyvoice_otel import masking
from cosyvoice_otel.sdk import redaction
from cosyvoice_otel.sdk.redaction import MASK, UNMATCHED_PATH, RedactingSpanExporter

from ..support.helpers import examples
from ..support.leaks import encoded_by_every_exporter, found


class Pipeline:
    """A private provider -> RedactingSpanExporter -> in-memory exporter."""

    def __init__(self, keep_user_agent: bool = True) -> None:
        self.memory = InMemorySpanExporter()
        self.redacting = RedactingSpanExporter(self.memory, keep_user_agent=keep_user_agent)
        self.provider = TracerProvider(resource=Resource({"service.name": "SVC"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.redacting))

    def tracer(self, scope: str = "THIRDPARTY"):
        return self.provider.get_tracer(scope)

    def spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())


def quoting_span(pipe: Pipeline, text: str, register: bool = True) -> None:
    """A third-party SERVER span quoting ``text`` in every way an app or a library does."""
    with pipe.tracer().start_as_current_span("SYNTH", kind=SpanKind.SERVER) as span:
        if register:
            masking.remember(span.get_span_context().trace_id, [text])
        span.set_attribute("http.target", "/SYNTH?Q=" + quote_plus(text))
        span.set_attribute("http.route", "/SYNTH")
        span.set_attribute("LOG.MESSAGE", f"PROCESSING {text} NOW")
        span.set_attribute("LOG.REPR", f"GOT {text!r}")
        span.add_event("exception", {"exception.type": "ValueError",
                                     "exception.message": f"BAD TEXT: {text!r}"})
        span.add_event(f"STEP {text}")
        span.set_status(Status(StatusCode.ERROR, f"FAILED ON {text!r}"))


HOSTILE_TEXTS = [
    "pin 4321 for bob\x00",             # a NUL: repr() escapes it (the finding)
    "say \"hi\" and 'bye'",             # both quotes
    "back\\slash \\n not a newline",   # backslashes
    "tab\there\nnewline\r\x1b[31m",     # control characters
    "emoji 🎉🎤 voice",                 # emoji (non-BMP: JSON escapes them as surrogates)
    "混合 scripts Кириллица ελληνικά",    # mixed scripts
    "你好",                              # short CJK
    "ok",                               # short: masked as a whole token
    "a",                                # one character
    "%41+&=?#",                          # URL metacharacters
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_a_registered_text_is_in_no_exporters_encoding(text: str) -> None:
    pipe = Pipeline()
    quoting_span(pipe, text)
    encoded = encoded_by_every_exporter(pipe.spans())
    for exporter, output in encoded.items():
        assert found(text, output) == [], exporter
    # and the redaction is visible, not a silently emptied span
    span = pipe.spans()[0]
    assert MASK in span.attributes["LOG.MESSAGE"]
    assert MASK in span.events[0].attributes["exception.message"]
    assert MASK in span.status.description


def test_without_registration_the_same_text_would_leak() -> None:
    """The check above can fail: the same span, text not registered, reveals it."""
    pipe = Pipeline()
    quoting_span(pipe, "pin 4321 for bob\x00", register=False)
    for output in encoded_by_every_exporter(pipe.spans()).values():
        assert found("pin 4321 for bob\x00", output)


# hostile by nature: any characters, control ones, quotes, backslashes, emoji, other scripts;
# no upper-case ASCII (the test's own templates are upper-case, so they never match a text)
TEXT_ALPHABET = st.sampled_from(
    list(string.ascii_lowercase + string.digits + " '\"\\\t\n\r\x00\x01\x1b\x7f.,!-_")
    + list("éüñß中文女你好世界Кириллицаλ😀🎉🎤\u200b\u00a0"))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(TEXT_ALPHABET, min_size=1, max_size=40).filter(lambda t: any(
    c.isalnum() for c in t)))
def test_property_no_registered_text_survives_any_encoding(text: str) -> None:
    masking.forget_all()
    pipe = Pipeline()
    quoting_span(pipe, text)
    for output in encoded_by_every_exporter(pipe.spans()).values():
        assert found(text, output) == []


# ----------------------------------------------------------------- URLs, paths, user agents

def server_span(pipe: Pipeline, name: str, attributes: dict) -> ReadableSpan:
    with pipe.tracer().start_as_current_span(name, kind=SpanKind.SERVER, attributes=attributes):
        pass
    return pipe.spans()[-1]


@pytest.mark.parametrize(("key", "value", "declared", "expected"), [
    # short, unregistered query values: only the URL rule can catch these; the keys the route
    # declares as its API stay, every other key and bare item is the client's string
    ("http.url", "http://h:1/inference_sft?tts_text=hi&spk_id=abc", ("tts_text", "spk_id"),
     "http://h:1/inference_sft?tts_text=REDACTED&spk_id=REDACTED"),
    ("http.url", "http://h:1/inference_sft?tts_text=hi&SECRET=abc", ("tts_text",),
     "http://h:1/inference_sft?tts_text=REDACTED&REDACTED=REDACTED"),
    ("http.target", "/inference_sft?SECRET", ("tts_text",), "/inference_sft?REDACTED"),
    ("http.target", "/inference_sft?SECRET=1", (), "/inference_sft?REDACTED=REDACTED"),
    ("http.target", "/inference_sft?tts%5Ftext=1&&", ("tts_text",),
     "/inference_sft?tts%5Ftext=REDACTED&&"),
    ("url.full", "https://h/inference_sft?a=1;b=x#frag", ("a", "b"),
     "https://h/inference_sft?a=REDACTED;b=REDACTED"),
    ("url.full", "https://h/inference_sft?a=1;b=x", (), "https://h/inference_sft?REDACTED=REDACTED;"
     "REDACTED=REDACTED"),
    ("http.target", "/inference_sft?tts_text=ok", ("tts_text",), "/inference_sft?tts_text=REDACTED"),
    ("url.query", "tts_text=ok&x=", ("tts_text",), "tts_text=REDACTED&REDACTED=REDACTED"),
    ("url.query", "SECRET", (), "SECRET"),  # one word, no '=' or '&': not a query we can tell
    ("http.target", "/inference_sft", (), "/inference_sft"),  # nothing to hide
])
def test_query_strings_keep_only_the_names_the_route_declares(key, value, declared,
                                                               expected) -> None:
    masking.declare_query_names("/inference_sft", declared)
    try:
        pipe = Pipeline()
        span = server_span(pipe, "GET /inference_sft", {key: value,
                                                        "http.route": "/inference_sft"})
        assert span.attributes[key] == expected
    finally:
        masking._declared.pop("/inference_sft", None)


def test_an_encoded_question_mark_in_the_path_leaves_no_query_behind() -> None:
    """``/x%3FSECRET`` decodes to a url.path with a "?": the path is the route, whole."""
    span = server_span(Pipeline(), "GET /x", {"url.path": "/x?SECRET", "http.route": "/x"})
    assert span.attributes["url.path"] == "/x"


def test_a_server_span_without_a_path_keeps_its_name() -> None:
    span = server_span(Pipeline(), "None of XXXX", {"http.method": "GET"})
    assert span.name == "None of XXXX"


def test_an_event_renamed_by_its_mask_keeps_its_attributes() -> None:
    pipe = Pipeline()
    with pipe.tracer().start_as_current_span("S") as span:
        masking.remember(span.get_span_context().trace_id, ["secret words"])
        span.add_event("said secret words", {"n": 1})
    (event,) = pipe.spans()[-1].events
    assert MASK in event.name and dict(event.attributes) == {"n": 1}


def test_exports_are_counted_and_a_failing_redaction_logs_once_per_streak(caplog) -> None:
    class Boom(redaction.Redactor):
        def redact(self, span):
            raise RuntimeError("broken")

    pipe = Pipeline()
    for count in (2, 3):
        with pipe.tracer().start_as_current_span("P"):
            for _ in range(count - 1):
                pipe.tracer().start_span("C").end()
    assert pipe.redacting.counters["exported"] == 5  # each span once, added up
    exporter = RedactingSpanExporter(InMemorySpanExporter())
    exporter.redactor = Boom()
    with caplog.at_level("WARNING", logger="cosyvoice_otel"):
        for _ in range(3):
            exporter.export(pipe.spans()[:2])
    assert exporter.counters["redaction_failed"] == 6
    assert len([r for r in caplog.records if "redaction failed" in r.getMessage()]) == 1


def test_a_client_span_keeps_no_query_name_at_all() -> None:
    masking.declare_query_names("/inference_sft", ["tts_text"])
    try:
        pipe = Pipeline()
        with pipe.tracer().start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
                "http.url": "http://up/inference_sft?tts_text=a&k", "http.route": "/inference_sft"}):
            pass
        assert pipe.spans()[-1].attributes["http.url"] == \
            "http://up/inference_sft?REDACTED=REDACTED&REDACTED"
    finally:
        masking._declared.pop("/inference_sft", None)


def test_a_raw_path_becomes_its_route_template_or_a_placeholder() -> None:
    pipe = Pipeline()
    matched = server_span(pipe, "GET /synthesize/{voice}", {
        "http.route": "/synthesize/{voice}", "http.target": "/synthesize/alice-secret?x=1",
        "url.path": "/synthesize/alice-secret",
        "http.url": "http://h:8/synthesize/alice-secret?x=1"})
    assert matched.attributes["http.target"] == "/synthesize/{voice}?REDACTED=REDACTED"
    assert matched.attributes["url.path"] == "/synthesize/{voice}"
    assert matched.attributes["http.url"] == "http://h:8/synthesize/{voice}?REDACTED=REDACTED"
    # plain ASGI names an unmatched request after its raw path
    unmatched = server_span(pipe, "GET /my-secret-file.wav/x", {
        "http.target": "/my-secret-file.wav/x", "http.status_code": 404})
    assert unmatched.attributes["http.target"] == UNMATCHED_PATH
    assert unmatched.name == f"GET {UNMATCHED_PATH}"


@pytest.mark.parametrize(("keep", "expected"), [(True, "curl/8.5 (secret-build)"), (False, MASK)])
def test_user_agent_is_kept_unless_switched_off(keep: bool, expected: str) -> None:
    pipe = Pipeline(keep_user_agent=keep)
    span = server_span(pipe, "GET /x", {"http.user_agent": "curl/8.5 (secret-build)",
                                        "user_agent.original": "curl/8.5 (secret-build)"})
    assert span.attributes["http.user_agent"] == expected
    assert span.attributes["user_agent.original"] == expected


def test_our_own_span_names_and_attributes_are_never_masked() -> None:
    """A text that equals a stage name must not erase the stage from the trace; our stage
    spans' events (exception messages) are still masked."""
    pipe = Pipeline()
    with pipe.tracer("cosyvoice_otel").start_as_current_span("flow") as span:
        masking.remember(span.get_span_context().trace_id, ["flow"])
        span.set_attribute("cosyvoice.mode", "flow")
        span.add_event("exception", {"exception.message": "bad 'flow'"})
    out = pipe.spans()[0]
    assert out.name == "flow" and out.attributes["cosyvoice.mode"] == "flow"
    assert out.events[0].attributes["exception.message"] == f"bad '{MASK}'"


def test_unchanged_spans_are_passed_through_not_copied() -> None:
    pipe = Pipeline()
    seen: list = []

    class Capture(SpanExporter):
        def export(self, spans):
            seen.extend(spans)
            return SpanExportResult.SUCCESS

    exporter = RedactingSpanExporter(Capture())
    with pipe.tracer().start_as_current_span("CLEAN") as span:
        span.set_attribute("n", 3)
    original = pipe.memory.get_finished_spans()[0]
    exporter.export([original])
    assert seen[0] is original


def test_a_batch_that_cannot_be_redacted_is_dropped_not_exported() -> None:
    class Boom(redaction.Redactor):
        def redact(self, span):
            raise RuntimeError("broken")

    memory = InMemorySpanExporter()
    exporter = RedactingSpanExporter(memory)
    exporter.redactor = Boom()
    pipe = Pipeline()
    with pipe.tracer().start_as_current_span("X"):
        pass
    assert exporter.export(pipe.spans()).name == "FAILURE"
    assert memory.get_finished_spans() == ()
    assert exporter.counters["redaction_failed"] == 1


def test_the_registry_is_bounded() -> None:
    for trace_id in range(1, masking.MAX_TRACES + 10):
        masking.remember(trace_id, ["some text"])
    assert masking.pattern_for(1) is None  # the oldest were forgotten
    assert masking.pattern_for(masking.MAX_TRACES + 9) is not None


def test_a_text_registered_after_a_first_export_is_masked_too() -> None:
    masking.remember(7, ["first words"])
    assert masking.pattern_for(7).search("another sentence") is None
    masking.remember(7, ["another sentence"])
    assert masking.pattern_for(7).search("another sentence") is not None


def test_flush_is_passed_to_the_wrapped_exporter_with_its_timeout() -> None:
    asked = []

    class Inner(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            asked.append(timeout_millis)
            return False  # its answer comes back as it is

    assert RedactingSpanExporter(Inner()).force_flush(1234) is False
    assert RedactingSpanExporter(Inner()).force_flush() is False
    assert asked == [1234, 30000]
