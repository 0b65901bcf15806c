"""`report`'s reading of traces (issue 31: lines only the e2e report tests ran): which span is a
request, warm-up and interrupted requests, concurrency buckets, the sampling note, the JSON and
text figures, the rank test's edge cases, rules and sides that do not parse."""

from __future__ import annotations

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import report as rep


def request(trace_id: str, duration: int = 100_000, parent_kind: str | None = "SERVER",
            gradio: bool = False, **tags: str) -> list[dict]:
    spans = [{"traceId": trace_id, "id": "2", "parentId": "1", "name": s.INFERENCE,
              "timestamp": 2_000, "duration": duration - 1_000, "tags": {s.MODE: "sft", **tags}},
             {"traceId": trace_id, "id": "3", "parentId": "2", "name": "vocoder",
              "timestamp": 3_000, "duration": duration // 4, "tags": {}}]
    if parent_kind is not None:
        spans.append({"traceId": trace_id, "id": "1", "name": "post /inference_sft",
                      "timestamp": 1_000, "duration": duration, "kind": parent_kind,
                      "tags": {}})
    if gradio:
        spans.append({"traceId": trace_id, "id": "0", "name": s.GRADIO_EVENT,
                      "timestamp": 500, "duration": duration + 5_000, "tags": {}})
    return spans


@pytest.mark.parametrize(("kind", "gradio", "expected"), [
    ("SERVER", False, 100_000),      # the HTTP server span above the inference
    ("CLIENT", False, 99_000),       # not a server span: the inference itself
    (None, False, 99_000),           # no parent in the trace
    ("SERVER", True, 105_000),       # a Gradio event: the whole queued request
])
def test_the_request_is_the_widest_span_that_stands_for_it(kind, gradio, expected) -> None:
    groups = rep.analyse([request("a" * 32, parent_kind=kind, gradio=gradio)])
    assert groups["all"].requests == [(expected, "a" * 32)]


def test_a_trace_with_no_synthesis_is_not_a_request() -> None:
    other = [{"traceId": "b" * 32, "id": "1", "name": "get /health", "timestamp": 1,
              "duration": 5, "kind": "SERVER", "tags": {}}]
    assert rep.analyse([other]) == {}


def test_warm_up_and_interrupted_requests_are_counted_apart() -> None:
    traces = [request("1" * 32, **{s.WARMUP: "true"}),
              request("2" * 32, **{s.END_REASON: "interrupted"}),
              request("3" * 32)]
    group = rep.analyse(traces)["all"]
    assert len(group.requests) == 2 and group.warmup_excluded == 1 and group.interrupted == 1
    assert len(rep.analyse(traces, include_warmup=True)["all"].requests) == 3
    text = rep.to_text({"all": group}, "http://z")
    assert "interrupted requests (client went away): 1" in text
    assert "warm-up requests left out: 1 (--include-warmup keeps them)" in text
    doc = rep.to_dict({"all": group}, "http://z")["all"]
    assert (doc["interrupted"], doc["warmup_excluded"], doc["requests"]) == (1, 1, 2)
    # a group whose only request was a warm-up still says so
    only = rep.analyse([request("4" * 32, **{s.WARMUP: "true", "v": "2"})], by="v")
    assert only["2"].warmup_excluded == 1 and only["2"].requests == []


@pytest.mark.parametrize(("inflight", "bucket"), [
    ("1", "1"), ("2", "2"), ("3", "3-4"), ("4", "3-4"), ("5", "5-8"), ("8", "5-8"),
    ("9", "9+"), ("120", "9+"), (None, "(none)"), ("many", "(none)")])
def test_concurrency_buckets(inflight, bucket) -> None:
    assert rep.concurrency_bucket(inflight) == bucket
    tags = {} if inflight is None else {s.INFLIGHT: inflight}
    assert list(rep.analyse([request("c" * 32, **tags)], by=rep.CONCURRENCY)) == [bucket]


def test_the_sampling_note_lists_each_rate_once_in_order() -> None:
    traces = [request("1" * 32, **{s.SAMPLING_RATE: "0.5"}),
              request("2" * 32, **{s.SAMPLING_RATE: "0.1"}),
              request("3" * 32, **{s.SAMPLING_RATE: "0.5"}),
              request("4" * 32, **{s.SAMPLING_RATE: "often"})]
    note = rep.sampling_note(traces)
    assert note.startswith("note: these traces are a sample (sampling rate 10%, 50%; ")
    assert rep.sampling_note([request("5" * 32)]) is None


def test_the_json_figures_are_each_stages_own() -> None:
    traces = [request(f"{i:032x}", duration=100_000 * (i + 1)) for i in range(4)]
    groups = rep.analyse(traces)
    doc = rep.to_dict(groups, "http://z", slowest=2)["all"]
    vocoder = groups["all"].stages["vocoder"]
    assert doc["stages"]["vocoder"] == {
        "count": 4, "p50_us": vocoder.stat("p50"), "p95_us": vocoder.stat("p95"),
        "p99_us": vocoder.stat("p99"), "mean_us": vocoder.stat("mean"), "errors": 0,
        "share": groups["all"].share("vocoder")}
    assert [r["trace_id"] for r in doc["slowest"]] == [f"{3:032x}", f"{2:032x}"]
    assert doc["slowest"][0] == {"trace_id": f"{3:032x}", "duration_us": 400_000,
                                 "link": f"http://z/zipkin/traces/{3:032x}"}


def test_side_by_side_text_has_a_column_per_group() -> None:
    traces = [request("1" * 32, v="a"), request("2" * 32, duration=300_000, v="b")]
    groups = rep.analyse(traces, by="v")
    lines = rep.to_text(groups, "http://z").splitlines()
    assert lines[0].split(" | ")[1:] == [f"{'a':>24s}", f"{'b':>24s}"]
    (vocoder,) = [line for line in lines if line.startswith("vocoder")]
    a, b = (groups[k].stages["vocoder"] for k in ("a", "b"))
    assert vocoder.split(" | ")[1:] == [
        f"{rep._fmt_us(a.stat('p50'))} / {rep._fmt_us(a.stat('p95'))}".rjust(24),
        f"{rep._fmt_us(b.stat('p50'))} / {rep._fmt_us(b.stat('p95'))}".rjust(24)]
    assert "(cells: p50 / p95; requests: a=1, b=1)" in lines
    assert "[b] slowest requests:" in lines


@pytest.mark.parametrize(("a", "b", "p"), [
    ([], [1.0], 1.0), ([1.0], [], 1.0), ([], [], 1.0), ([5.0] * 6, [5.0] * 6, 1.0)])
def test_the_rank_test_with_nothing_to_rank_finds_no_difference(a, b, p) -> None:
    assert rep.mann_whitney_p(a, b) == p


def test_a_side_missing_or_at_zero_has_no_delta_and_no_p_value() -> None:
    some = rep.StageStats("vocoder", [1.0, 2.0])
    zero = rep.StageStats("vocoder", [0.0, 0.0])
    assert rep.StageComparison("vocoder", None, some).delta("p50") is None
    assert rep.StageComparison("vocoder", zero, some).delta("p50") is None
    assert rep.StageComparison("vocoder", some, None).p_value is None
    assert rep.StageComparison("vocoder", some, some).delta("p50") == 0.0
    assert rep._pct(None) == "-" and rep._pct(0.123) == "+12.3%"


@pytest.mark.parametrize(("text", "message"), [
    ("vocoder.p95 fast", "expected STAGE.STAT OP VALUE"),
    ("vocoder.count>5ms", "count takes no unit"),
    ("vocoder.errors>=1s", "errors takes no unit"),
])
def test_an_alert_rule_that_does_not_parse_is_one_error(text, message) -> None:
    with pytest.raises(rep.ReportError, match=message):
        rep.parse_rule(text)


def test_a_side_is_its_key_and_value_without_blanks() -> None:
    assert rep.parse_side(" service.version = 1.1 ") == ("service.version", "1.1")
    assert rep.compare({}, "a", "b") == []
