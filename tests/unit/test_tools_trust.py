"""The tools read what Zipkin (or something posing as it) answers: they must neither crash on a
span Zipkin stored without a name, times or tags, nor believe an answer to another question.
And report's --compare verdict follows its stated rule, at its boundaries."""

from __future__ import annotations

import json

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import report as rep
from cosyvoice_otel.tools import verify
from cosyvoice_otel.tools.checks import check_synthesis
from cosyvoice_otel.tools.zipkin import ZipkinError, normalize

TRACE = "a" * 32


def inference(**tags: str) -> dict:
    return {"traceId": TRACE, "id": "1", "name": s.INFERENCE, "timestamp": 10, "duration": 5,
            "tags": {s.MODE: "sft", **tags}}


@pytest.mark.parametrize("span", [
    {"traceId": TRACE, "id": "2", "parentId": "1"},  # no name (Zipkin omits an empty one)
    {"traceId": TRACE, "id": "2", "name": None, "timestamp": "soon", "duration": None},
    {"traceId": TRACE, "id": "2", "name": "vocoder", "tags": "not a dict"},
    {"traceId": TRACE, "id": "2", "name": "vocoder", "tags": {"k": 1}, "parentId": 7},
    {"id": "2"},  # no trace id at all
    {"name": "x", "duration": True},  # a boolean is no duration
])
def test_report_and_checks_take_any_span_zipkin_stored(span) -> None:
    spans = [inference(), span, "not a span", 42]
    groups = rep.analyse([spans])
    assert groups["all"].requests  # the request is still counted
    problems = check_synthesis(spans, "sft", False)
    assert isinstance(problems, list) and problems  # judged incomplete, not a crash


def test_normalize_gives_every_span_the_fields_the_tools_read() -> None:
    (span,) = normalize([{"traceId": "ABC", "timestamp": 5.5, "tags": {"n": 3},
                          "kind": 1, "parentId": None}])
    assert span == {"traceId": "abc", "id": "", "name": "", "timestamp": 5.5, "duration": 0,
                    "tags": {"n": "3"}, "kind": None}
    with pytest.raises(ZipkinError, match="expected a list of spans, got dict"):
        normalize({"not": "a list"})


def sent(bad: bool = False) -> verify.Sent:
    return verify.Sent(TRACE, "b3multi", "sft", False, "CANARYX", bad=bad)


def test_verify_fails_a_zipkin_that_answers_with_another_trace() -> None:
    other = [dict(inference(), traceId="b" * 32)]
    checks = verify._check_one(sent(), other)
    assert [c.ok for c in checks] == [False]
    assert "another trace" in checks[0].reason


def test_verify_accepts_the_64_bit_form_of_the_id_it_sent() -> None:
    short = [dict(inference(), traceId=TRACE[16:])]
    assert verify._check_one(sent(), short)[0].ok


@pytest.mark.parametrize(("reason", "ok"), [("text_too_long", True), ("KeyError", False),
                                            ("anything at all", False), ("", False)])
def test_verify_wants_the_schemas_reason_for_its_bad_input(reason, ok) -> None:
    span = inference(**{"error": "x", s.ERROR_TYPE: reason} if reason else {"error": "x"})
    checks = verify._check_one(sent(bad=True), normalize([span]))
    error_check = next(c for c in checks if c.name.endswith("error tag and reason"))
    assert error_check.ok is ok
    assert verify.BAD_INPUT_REASON in s.ERROR_REASONS


# ----------------------------------------------------------------- --compare: its stated rule

def stats(values: list[float]) -> rep.StageStats:
    return rep.StageStats("vocoder", sorted(values))


def test_a_large_median_shift_without_significance_is_no_change() -> None:
    """Medians 33% apart, but the samples overlap: p >= 0.05, so no verdict (without the p
    rule this would read "slower")."""
    a, b = [1, 2, 3, 100, 101], [2, 3, 4, 102, 103]
    row = rep.StageComparison("vocoder", stats(a), stats(b))
    assert row.delta("p50") == pytest.approx(1 / 3)
    assert row.p_value >= rep.ALPHA
    assert row.verdict == "no significant change"


@pytest.mark.parametrize(("n_a", "n_b", "verdict"), [
    (5, 5, "slower"),  # exactly the minimum a side: a verdict (p = 0.0122)
    (4, 5, "too few samples"), (5, 4, "too few samples"), (4, 4, "too few samples")])
def test_five_samples_a_side_is_the_boundary(n_a, n_b, verdict) -> None:
    a = [100 + i for i in range(n_a)]
    b = [200 + i for i in range(n_b)]
    assert rep.StageComparison("vocoder", stats(a), stats(b)).verdict == verdict


def test_a_gradio_stream_kept_alive_by_heartbeats_ends_at_the_calls_deadline() -> None:
    """A handler that never ends (upstream v3's loop after its LLM thread died) behind Gradio's
    heartbeats: each read returns, so only a deadline for the whole call ends the wait."""
    import threading
    import time

    from cosyvoice_otel.tools.gradio_rest import GradioError, GradioRest

    from ..support.loopback_server import LoopbackServer, QuietHandler

    stop = threading.Event()

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/config"):
                body = json.dumps({"dependencies": [{"api_name": "generate_audio", "id": 0}]})
                self.reply(200, body.encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            while not stop.is_set():  # heartbeats, never a result
                try:
                    self.wfile.write(b'data: {"msg": "heartbeat"}\n\n')
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.reply(200, b"{}")

    server = LoopbackServer(Handler, "")
    try:
        client = GradioRest(server.endpoint, timeout=5, deadline=0.5)
        with pytest.raises(GradioError, match="no result within 0.5 s"):
            client.join("generate_audio", ["text"])
    finally:
        stop.set()
        server.close()


# ---------------------------------------------------------- --by a numeric tag; --errors triage

def request_trace(trace_id: str, snr: str | None, ts: int, error: str | None = None) -> list:
    tags = {s.MODE: "zero_shot"}
    if snr is not None:
        tags[s.AUDIO_SNR_DB] = snr
    spans = [{"traceId": trace_id, "id": "1", "name": s.INFERENCE, "timestamp": ts,
              "duration": 100, "tags": tags}]
    prompt = {"traceId": trace_id, "id": "2", "parentId": "1", "timestamp": ts, "duration": 5,
              "name": "audio_preprocess.speech_tokenizer",
              "tags": {s.AUDIO_SNR_DB: snr or "0", s.AUDIO_RMS_DBFS: "-20.5",
                       s.AUDIO_SILENCE: "0.3", s.AUDIO_CLIPPING: "0.0",
                       s.PROMPT_SECONDS: "2.0"}}
    if error:
        prompt["tags"].update({"error": error, s.ERROR_TYPE: error})
    return [*spans, prompt]


def test_by_a_numeric_tag_buckets_its_values_in_ranges_of_equal_counts() -> None:
    traces = [request_trace(f"{i:032x}", str(v), i) for i, v in enumerate(
        [1.5, 3, 4, 8, 9.5, 12, 15, 20, 30, 45])]
    traces.append(request_trace("f" * 32, None, 99))
    groups = rep.analyse(traces, by=s.AUDIO_SNR_DB)
    assert sorted(groups) == sorted(["(none)", "[1.5, 4)", "[4, 9.5)", "[9.5, 15)",
                                     "[15, 30)", "[30, 45]"])
    assert [len(groups[k].requests) for k in ("[1.5, 4)", "[30, 45]", "(none)")] == [2, 2, 1]


@pytest.mark.parametrize("keys", [["1", "2", "3", "1", "2"],  # few distinct: each its own
                                  ["a", "b", "c", "d", "e", "a"],  # five: not bucketed
                                  ["1", "2", "3", "4", "nan"],
                                  ["(none)"]])
def test_few_values_are_not_bucketed(keys) -> None:
    assert rep.numeric_buckets(keys) is None


def test_many_words_keep_the_most_frequent_and_the_rest_is_other() -> None:
    keys = ["a"] * 6 + ["b"] * 5 + ["c"] * 4 + ["d"] * 3 + ["e"] * 2 + ["f", "g", "(none)"]
    label = rep.numeric_buckets(keys)
    assert [label(k) for k in ("a", "b", "c", "d", "e", "f", "g", "(none)")] == [
        "a", "b", "c", "d", "e", "(other)", "(other)", "(none)"]


def test_nan_and_inf_are_set_aside_and_the_numbers_still_ranged() -> None:
    keys = [str(v) for v in range(300)] + ["nan", "inf"]
    label = rep.numeric_buckets(keys)
    columns = {label(k) for k in keys}
    assert "nan" in columns and "inf" in columns
    assert len(columns) == rep.BUCKETS + 2  # 300 values: five ranges, not 300 columns
    assert label("0") == "[0, 60)" and label("299") == "[240, 299]"


def test_errors_lists_the_failing_requests_with_their_prompts_figures() -> None:
    traces = [request_trace("a" * 32, "3.2", 10, error="asr_empty_result"),
              request_trace("b" * 32, "41", 20),
              request_trace("c" * 32, "5.5", 30, error="KeyError")]
    rows = rep.failures(traces, None, "http://z:9411")
    assert [r["trace_id"] for r in rows] == ["c" * 32, "a" * 32]  # newest first, failing only
    (asr,) = rep.failures(traces, "asr_empty_result", "http://z:9411")
    assert asr["reasons"] == ["asr_empty_result"] and asr["audio"][s.AUDIO_SNR_DB] == "3.2"
    assert asr["link"] == f"http://z:9411/zipkin/traces/{'a' * 32}"
    text = rep.failures_text([asr], "asr_empty_result")
    assert "failing requests (asr_empty_result): 1" in text and "3.2" in text
    assert rep.failures(traces, "no_such_reason", "http://z") == []
