"""Redaction rules one by one, with exact expected outputs (so a partial mask is a failure):
the registry, each encoded form of a text, word and token boundaries, URL and path rules,
sequence values, and that a redacted copy keeps everything it does not redact."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from cosyvoice_otel import masking
from cosyvoice_otel.sdk import redaction
from cosyvoice_otel.sdk.redaction import MASK, UNMATCHED_PATH, Redactor

M = MASK


def masked(texts: list[str], value: str) -> str:
    masking.remember(99, texts)
    return redaction.mask(value, masking.pattern_for(99))


TEXT = "pin 4321 for \"bob\" \\ 'x' 你好 🎉\x00\n"
FORMS = {
    "as is": TEXT,
    "repr": repr(TEXT)[1:-1],
    "ascii": ascii(TEXT)[1:-1],
    "json": json.dumps(TEXT)[1:-1],
    "json, non-ascii kept": json.dumps(TEXT, ensure_ascii=False)[1:-1],
    "url, nothing safe": quote(TEXT, safe=""),
    "url, plus": quote_plus(TEXT),
    "url, slash safe": quote(TEXT + "/a"),
    "repr with the other quote": TEXT.replace("\\", "\\\\").replace("'", "\\'"),
    "stripped": TEXT.strip(),
    "url of a path, nothing safe": quote("a/b " + TEXT, safe=""),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_every_encoded_form_of_a_text_is_masked_whole(form: str) -> None:
    text = {FORMS["url, slash safe"]: TEXT + "/a",
            FORMS["url of a path, nothing safe"]: "a/b " + TEXT}.get(form, TEXT)
    assert masked([text], f"<<{form}>>") == f"<<{M}>>"


@pytest.mark.parametrize(("texts", "value", "expected"), [
    (["pin 4321 for bob"], "got 4321 alone", f"got {M} alone"),       # a word of 4 masked alone
    (["pin 4321 for bob"], "got 43210 and x4321", "got 43210 and x4321"),  # ...as a whole token
    (["pin 4321 for bob"], "pin and bob", "pin and bob"),              # words under 4 are not
    (["spam eggs"], "spammer eggsy", "spammer eggsy"),                  # tokens, not substrings
    (["a"], "a banana, a", f"{M} banana, {M}"),                         # a short text: a token
    (["ok"], "ok? look", f"{M}? look"),
    (["a-b!"], "xa-b!y", f"x{M}y"),                                      # 4+ non-word: substring
    (["abcd efgh"], "say abcd efgh now", f"say {M} now"),               # longest first: whole
    (["   "], "a   b", "a   b"),                                          # blank: nothing
    (["first text", "second sentence"], "first text, second sentence",
     f"{M}, {M}"),
])
def test_masking_table(texts, value, expected) -> None:
    assert masked(texts, value) == expected


def test_registration_ignores_non_text_and_trace_zero() -> None:
    masking.remember(5, [None, 42, b"bytes", "real text"])
    assert redaction.mask("real text 42", masking.pattern_for(5)) == f"{M} 42"
    masking.remember(0, ["never registered"])
    assert masking.pattern_for(0) is None


def test_texts_registered_separately_for_one_trace_all_stay_masked() -> None:
    masking.remember(5, ["first words"])
    masking.remember(6, ["other trace"])
    masking.remember(5, ["later sentence"])
    pattern = masking.pattern_for(5)
    assert redaction.mask("first words / later sentence / other trace", pattern) == \
        f"{M} / {M} / other trace"


def test_the_registry_keeps_exactly_max_traces_newest_first(monkeypatch) -> None:
    monkeypatch.setattr(masking, "MAX_TRACES", 3)
    for trace_id in (1, 2, 3):
        masking.remember(trace_id, ["some text"])
    assert masking.pattern_for(1) is not None  # exactly at the bound: nothing forgotten
    masking.remember(4, ["some text"])
    assert masking.pattern_for(1) is None and masking.pattern_for(2) is not None


def test_a_trace_in_use_is_kept_when_others_are_forgotten(monkeypatch) -> None:
    monkeypatch.setattr(masking, "MAX_TRACES", 2)
    masking.remember(1, ["one text"])
    masking.remember(2, ["two text"])
    masking.remember(1, ["one more"])  # trace 1 is active again: the newest
    masking.remember(3, ["three text"])
    assert masking.pattern_for(1) is not None and masking.pattern_for(2) is None


def test_a_trace_keep_errors_holds_keeps_its_masks_past_the_window(monkeypatch) -> None:
    """keep-errors decides a trace when it ends, however many requests started meanwhile."""
    monkeypatch.setattr(masking, "MAX_TRACES", 2)
    masking.remember(1, ["held text"])
    masking.pin(1)
    for trace_id in range(2, 50):
        masking.remember(trace_id, ["later text"])
    assert masking.pattern_for(1) is not None  # pinned: still masked when exported late
    assert masking.pattern_for(2) is None  # unpinned ones keep the window
    masking.pin(1)
    masking.unpin(1)  # one holder of two is done: still pinned
    masking.remember(60, ["later text"])
    assert masking.pattern_for(1) is not None
    masking.unpin(1)  # the last holder: it lives on as the newest trace would
    masking.remember(61, ["later text"])
    assert masking.pattern_for(1) is not None and masking.pattern_for(60) is None
    masking.remember(62, ["later text"])
    assert masking.pattern_for(1) is None


def test_the_registry_is_bounded_in_bytes_too(monkeypatch) -> None:
    monkeypatch.setattr(masking, "MAX_TEXT_BYTES", 25)
    masking.remember(1, ["a" * 10])
    masking.remember(2, ["b" * 10])
    masking.remember(2, ["b" * 10])  # the same text again costs nothing
    assert masking.pattern_for(1) is not None
    masking.remember(3, ["c" * 10])  # 30 bytes: the oldest goes
    assert masking.pattern_for(1) is None and masking.pattern_for(3) is not None
    assert masking._bytes == 20


@pytest.mark.parametrize(("value", "keep", "expected"), [
    ("/x?a=1&b=two", {"a", "b"}, "/x?a=REDACTED&b=REDACTED"),
    ("/x?a=1&b=two", {"a"}, "/x?a=REDACTED&REDACTED=REDACTED"),
    ("/x?a=1&b=two", set(), "/x?REDACTED=REDACTED&REDACTED=REDACTED"),
    ("a=1&b=2", {"a", "b"}, "a=REDACTED&b=REDACTED"),
    ("a=1&b=2", set(), "REDACTED=REDACTED&REDACTED=REDACTED"),
    ("/x/no-query", set(), "/x/no-query"),
    ("/x?flag", set(), "/x?REDACTED"),  # a bare item is the client's string
    ("/x?flag", {"flag"}, "/x?flag"),
    ("/x?", set(), "/x?"),
    ("/x?a=1;b", {"a"}, "/x?a=REDACTED;REDACTED"),
    ("/x?a%20b=1", {"a b"}, "/x?a%20b=REDACTED"),  # names compared decoded
    ("http://h/p?q=1#frag", {"q"}, "http://h/p?q=REDACTED#REDACTED"),
    ("http://h/p#frag", set(), "http://h/p#frag"),  # no query: no query rule
    ("/x?a=1?b=2", {"a"}, "/x?a=REDACTED"),  # the FIRST "?" starts the query
    ("a=1", set(), "REDACTED=REDACTED"),  # a bare query string of one item
    ("flag&other", set(), "REDACTED&REDACTED"),  # bare items only
])
def test_query_rule(value, keep, expected) -> None:
    assert redaction.redact_query(value, frozenset(keep)) == expected


# ------------------------------------------------------------------------ spans, whole

CTX = trace.SpanContext(0x1234, 0x5678, is_remote=False)
PARENT = trace.SpanContext(0x1234, 0x9999, is_remote=False)
RESOURCE = Resource({"service.name": "svc", "k": "v"})
SCOPE = InstrumentationScope("third.party", "1.2")
LINK = Link(trace.SpanContext(0xAAAA, 0xBBBB, is_remote=True))


def span(name="GET /x", kind=SpanKind.INTERNAL, attributes=None, events=(), status=None,
         scope=SCOPE) -> ReadableSpan:
    return ReadableSpan(name=name, context=CTX, parent=PARENT, resource=RESOURCE,
                        attributes=attributes or {}, events=events, links=(LINK,), kind=kind,
                        status=status or Status(StatusCode.UNSET), start_time=10, end_time=20,
                        instrumentation_scope=scope)


def test_a_redacted_copy_keeps_everything_it_does_not_redact() -> None:
    masking.remember(CTX.trace_id, ["secret words"])
    original = span(kind=SpanKind.CLIENT, attributes={"msg": "has secret words", "n": 3},
                    events=(Event("log", {"m": "secret words"}, timestamp=15),),
                    status=Status(StatusCode.ERROR, "failed: secret words"))
    copy = Redactor().redact(original)
    assert copy is not original
    assert (copy.context, copy.parent, copy.resource, copy.links, copy.kind, copy.start_time,
            copy.end_time, copy.instrumentation_scope) == (
        original.context, original.parent, original.resource, original.links, original.kind,
        10, 20, SCOPE)
    assert dict(copy.attributes) == {"msg": f"has {M}", "n": 3}
    assert copy.events[0].timestamp == 15 and dict(copy.events[0].attributes) == {"m": M}
    assert copy.events[0].name == "log"
    assert copy.status.status_code is StatusCode.ERROR
    assert copy.status.description == f"failed: {M}"


def test_a_span_without_context_passes_through() -> None:
    bare = ReadableSpan(name="bare")
    assert Redactor().redact(bare) is bare


def test_sequence_values_are_redacted_item_by_item() -> None:
    masking.remember(CTX.trace_id, ["secret words"])
    copy = Redactor().redact(span(kind=SpanKind.SERVER, attributes={
        "http.route": "/r/{id}", "list": ("ok", "secret words"),
        "http.target": "/r/1?q=1"}))
    assert copy.attributes["list"] == ("ok", M)
    urls = Redactor().redact(span(kind=SpanKind.SERVER, attributes={
        "http.route": "/r/{id}", "url.full": ("http://h/r/7?a=1",)}))
    assert urls.attributes["url.full"] == ("http://h/r/{id}?REDACTED=REDACTED",)


@pytest.mark.parametrize(("attributes", "name", "expected_name", "expected"), [
    ({"url.path": "/file=/tmp/me.wav", "http.route": "/file={path}"},
     "GET /file=/tmp/me.wav", "GET /file={path}", {"url.path": "/file={path}"}),
    ({"http.target": "/file=/tmp/me.wav?x=1", "http.route": "/file={path}"},
     "GET /file=/tmp/me.wav", "GET /file={path}", {"http.target": "/file={path}?REDACTED=REDACTED"}),
    ({"http.target": "/nope/me.wav"}, "GET /nope/me.wav", f"GET {UNMATCHED_PATH}",
     {"http.target": UNMATCHED_PATH}),
    ({"url.path": "/nope"}, "GET", "GET", {"url.path": UNMATCHED_PATH}),
    ({"http.target": "/same", "http.route": "/same"}, "GET /same", "GET /same",
     {"http.target": "/same"}),
])
def test_a_server_spans_raw_path_becomes_its_route(attributes, name, expected_name,
                                                    expected) -> None:
    copy = Redactor().redact(span(name=name, kind=SpanKind.SERVER, attributes=attributes))
    assert copy.name == expected_name
    for key, value in expected.items():
        assert copy.attributes[key] == value


def test_a_server_span_without_a_path_keeps_its_name() -> None:
    assert Redactor().redact(span(name="GET", kind=SpanKind.SERVER,
                                  attributes={"http.method": "GET"})).name == "GET"


def test_only_server_spans_get_the_path_rule() -> None:
    client = Redactor().redact(span(kind=SpanKind.CLIENT, attributes={
        "http.url": "http://upstream/a/b?k=v", "url.path": "/a/b"}))
    assert client.attributes["http.url"] == "http://upstream/a/b?REDACTED=REDACTED"
    assert client.attributes["url.path"] == "/a/b"
    event = Redactor().redact(span(kind=SpanKind.SERVER, attributes={"http.route": "/r"},
                                   events=(Event("e", {"url.path": "/raw"}),)))
    assert dict(event.events[0].attributes) == {"url.path": "/raw"}


def test_a_third_party_span_name_is_masked_ours_is_not() -> None:
    masking.remember(CTX.trace_id, ["secret words"])
    assert Redactor().redact(span(name="call secret words")).name == f"call {M}"
    ours = InstrumentationScope(redaction.OUR_SCOPE)
    kept = Redactor().redact(span(name="secret words", scope=ours,
                                  attributes={"cosyvoice.mode": "secret words"}))
    assert kept.name == "secret words" and kept.attributes["cosyvoice.mode"] == "secret words"


def test_structural_keys_are_never_masked() -> None:
    masking.remember(CTX.trace_id, ["GET", "join"])
    copy = Redactor().redact(span(attributes={"http.method": "GET",
                                              "http.route": "/queue/join", "other": "GET"}))
    assert copy.attributes["http.method"] == "GET"
    assert copy.attributes["http.route"] == "/queue/join"
    assert copy.attributes["other"] == M


def test_user_agent_is_kept_by_default() -> None:
    copy = Redactor().redact(span(attributes={"http.user_agent": "curl/8"}))
    assert copy.attributes["http.user_agent"] == "curl/8"


class Inner:
    def __init__(self) -> None:
        self.shutdowns = 0
        self.batches: list = []

    def export(self, spans):
        self.batches.append(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_shared_exporter_is_shut_down_once_by_its_last_user() -> None:
    inner = Inner()
    alone = redaction.RedactingSpanExporter(inner)
    alone.shutdown()
    assert inner.shutdowns == 1
    inner = Inner()
    shared = redaction.RedactingSpanExporter(inner)
    assert shared.share() is shared
    shared.shutdown()
    assert inner.shutdowns == 0
    shared.shutdown()
    assert inner.shutdowns == 1


def test_failed_redaction_is_counted_and_logged_once(caplog) -> None:
    class Boom(Redactor):
        def redact(self, span):
            raise ValueError("cannot")

    inner = Inner()
    exporter = redaction.RedactingSpanExporter(inner)
    exporter.redactor = Boom()
    with caplog.at_level("WARNING", logger="cosyvoice_otel.export"):
        exporter.export([span(), span()])
        exporter.export([span()])
    assert inner.batches == [] and exporter.counters["redaction_failed"] == 3
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: redaction failed (ValueError: cannot); batch dropped"]
