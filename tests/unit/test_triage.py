"""``triage``'s reading of a trace (table-driven, on traces in the shape the real Traefik, auth
service and app gave in tests/e2e/test_gateway.py), its times, and its command line."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from cosyvoice_otel import schema as s
from cosyvoice_otel.launcher import cli
from cosyvoice_otel.tools import triage as tri
from cosyvoice_otel.tools.when import parse_time

T0 = 1_796_600_000_000_000
TRACE = "ab" * 16


def span(sid: str, name: str, parent: str | None = None, service: str = "gateway",
         kind: str | None = None, offset: int = 0, **tags: str) -> dict:
    out = {"traceId": TRACE, "id": sid * 16 if len(sid) == 1 else sid, "name": name,
           "timestamp": T0 + offset, "duration": 1000, "localEndpoint": {"serviceName": service},
           "tags": dict(tags)}
    if parent:
        out["parentId"] = parent * 16 if len(parent) == 1 else parent
    if kind:
        out["kind"] = kind
    return out


def entry(code: str) -> dict:
    return span("a", "get", "f", kind="SERVER", **{"http.response.status_code": code})


def edge(code: str, *, limit: bool = True, proxied: bool = True, app: list[dict] | None = None,
         auth_code: str = "200") -> list[dict]:
    spans = [entry(code), span("b", "router", "a"), span("c", "forwardauth", "b"),
             span("d", "authrequest", "c", kind="CLIENT"),
             span("e", "get /check", "d", "auth", "SERVER", **{"http.status_code": auth_code})]
    if limit:
        spans.append(span("1", "ratelimiter", "c"))
    if proxied:
        spans += [span("2", "service", "1"), span("3", "reverseproxy", "2", kind="CLIENT",
                                                   **{"http.response.status_code": code})]
    return spans + (app or [])


def app_spans(code: str = "200", **failure: str) -> list[dict]:
    inference_tags = {s.ERROR_TYPE: failure["reason"]} if failure else {}
    stage_tags = {s.ERROR_TYPE: failure["reason"]} if failure.get("stage") else {}
    out = [span("4", "get /inference_sft", "3", "app", "SERVER", **{"http.status_code": code},
                **inference_tags),
           span("5", s.INFERENCE, "4", "app", offset=10, **inference_tags)]
    if failure.get("stage"):
        out.append(span("6", failure["stage"], "5", "app", offset=20,
                         **{**stage_tags, s.AUDIO_SNR_DB: "0.2"}))
    return out


CASES = [
    ("allowed", edge("200", app=app_spans()), None),
    ("no credential", edge("401", limit=False, proxied=False, auth_code="401"),
     ("gateway auth", "gateway auth", "401", "")),
    ("wrong credential", edge("403", limit=False, proxied=False, auth_code="403"),
     ("gateway auth", "gateway auth", "403", "")),
    ("rate limited", edge("429", proxied=False), ("rate limit", "rate limit", "429", "")),
    ("upstream down", edge("502"), ("upstream unavailable", "upstream unavailable", "502", "")),
    ("app refused", edge("400", app=app_spans("400")), ("app", "app", "400", "http_400")),
    ("stage failed", edge("200", app=app_spans(reason="text_too_long")),
     (s.INFERENCE, "stage", "200", "text_too_long")),
    ("prompt stage failed", edge("500", app=app_spans(
        "500", reason="ValueError", stage="audio_preprocess.speech_feat")),
     ("audio_preprocess.speech_feat", "stage", "500", "ValueError")),
    # no gateway in front: the app's own server span is the entry
    ("app alone, failed", app_spans(reason="asr_empty_result")[:2],
     (s.INFERENCE, "stage", "200", "asr_empty_result")),
    ("app alone, fine", app_spans()[:2], None),
    # a 401 that was proxied is the app's own, not the gateway's auth step
    ("app's own 401", edge("401", app=app_spans("401")), ("app", "app", "401", "http_401")),
    # a 429 with no rate-limit step: the app's (or an upstream's) own
    ("429 without the step", edge("429", limit=False, proxied=False),
     ("app", "app", "429", "http_429")),
]


@pytest.mark.parametrize(("case", "spans", "expected"), CASES, ids=[c[0] for c in CASES])
def test_where_each_request_stopped(case, spans, expected) -> None:
    found = tri.classify(spans, "http://zipkin:9411")
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert (found.where, found.cause, found.status, found.reason) == expected
    assert found.link == f"http://zipkin:9411/zipkin/traces/{TRACE}"
    assert found.timestamp_us == min(sp["timestamp"] for sp in spans
                                     if sp.get("kind") == "SERVER" or len(spans) == 2)


def test_the_prompts_figures_come_only_when_the_prompt_is_the_suspect() -> None:
    prompt = tri.classify(edge("500", app=app_spans("500", reason="ValueError",
                                                    stage="audio_preprocess.speech_feat")))
    assert prompt is not None and prompt.prompt == {s.AUDIO_SNR_DB: "0.2"}
    text = tri.classify(edge("200", app=app_spans(reason="text_too_long")))
    assert text is not None and text.prompt == {}


@pytest.mark.parametrize("hostile", [None, {}, "x", [1, None, "span"], [{"id": 3}],
                                     [{"traceId": TRACE, "id": "a", "tags": "not a dict"}]])
def test_what_is_not_a_trace_is_no_finding(hostile) -> None:
    assert tri.classify(hostile) is None


def test_the_window_keeps_what_began_in_it_oldest_first() -> None:
    late = edge("429", proxied=False)
    for sp in late:
        sp["timestamp"] += 5_000_000
        sp["traceId"] = "cd" * 16
    early = edge("401", limit=False, proxied=False)
    found = tri.triage([late, early, edge("200", app=app_spans())], "", T0 - 1, T0 + 10**7)
    assert [f.where for f in found] == ["gateway auth", "rate limit"]
    assert tri.triage([late, early], "", T0 + 1, T0 + 10**7)[0].where == "rate limit"
    assert tri.summary(found) == {"gateway auth": 1, "rate limit": 1}
    assert tri.refused_before_synthesis([late, early, edge("502")]) == {
        "gateway auth": 1, "rate limit": 1, "upstream unavailable": 1}


def test_the_text_is_a_line_per_request_and_a_summary() -> None:
    found = [tri.classify(edge("429", proxied=False), "http://z")]
    text = tri.to_text(found, "in the window").splitlines()
    assert text[0] == "1 failed or refused requests in the window:"
    assert text[2].split()[2:5] == ["rate", "limit", "429"] and text[2].endswith(
        f"http://z/zipkin/traces/{TRACE}")
    assert text[-1] == "by cause: rate limit 1"
    assert tri.to_text([], "from a to b") == "no failed or refused requests from a to b\n"


NOW = datetime(2026, 12, 7, 10, 30, 15, tzinfo=timezone(timedelta(hours=8)))


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("15:00", NOW.replace(hour=15, minute=0, second=0)),
    ("yesterday 15:00", NOW.replace(day=6, hour=15, minute=0, second=0)),
    ("Today 9:05:07", NOW.replace(hour=9, minute=5, second=7)),
    ("2026-12-06T15:00:00+00:00", datetime(2026, 12, 6, 15, tzinfo=timezone.utc)),
    (" 2026-12-06 15:00:00+08:00 ", NOW.replace(day=6, hour=15, minute=0, second=0)),
])
def test_times_as_an_operator_says_them(text, expected) -> None:
    assert parse_time(text, NOW) == expected


def test_a_time_without_an_offset_is_local() -> None:
    parsed = parse_time("2026-12-06T15:00:00")
    assert parsed.tzinfo is not None and parsed.hour == 15


@pytest.mark.parametrize("bad", ["tomorrow", "25:00", "12:61", "yesterday", "", "1" * 200,
                                 "2026-13-01T00:00:00", "\x00", "nan"])
def test_a_time_that_is_not_one_says_what_is_accepted(bad) -> None:
    with pytest.raises(ValueError, match="expected a time like|no such time"):
        parse_time(bad, NOW)


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["triage", *args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


@pytest.mark.parametrize(("args", "says"), [
    (("--at", "tomorrow"), "expected a time like"),
    (("--window", "soon"), "--window"),
    (("--trace-id", "xyz"), "--trace-id must be 16 or 32 hex digits"),
    (("--trace-id", "ab" * 100), "--trace-id must be 16 or 32 hex digits"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, says) -> None:
    code, out, err = run(capsys, "--zipkin", "http://127.0.0.1:9", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err


def test_a_zipkin_that_is_away_is_one_line_and_exit_1(capsys) -> None:
    code, out, err = run(capsys, "--zipkin", "http://127.0.0.1:9", "--at", "yesterday 15:00")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Connection refused" in err


class FakeClient:
    def __init__(self, url, timeout=0) -> None:
        self.base_url = url
        self.asked: dict = {}

    def traces(self, **query):
        FakeClient.asked = query
        return [edge("401", limit=False, proxied=False), edge("200", app=app_spans())]

    def trace(self, trace_id):
        FakeClient.asked = {"trace_id": trace_id}
        return edge("429", proxied=False)


def test_the_window_asked_of_zipkin_is_centred_on_the_time(capsys, monkeypatch) -> None:
    from cosyvoice_otel.tools import zipkin

    monkeypatch.setattr(zipkin, "ZipkinClient", FakeClient)
    at = datetime.fromtimestamp(T0 / 1e6, tz=timezone.utc)
    code, out, _ = run(capsys, "--zipkin", "http://z:9411", "--at", at.isoformat(),
                       "--window", "20m", "--service", "gateway", "--json")
    assert code == 0
    assert FakeClient.asked == {"service": "gateway", "end_ts_ms": T0 // 1000 + 600_000,
                                "lookback_ms": 1_200_000, "limit": 10000}
    found = json.loads(out)
    assert [r["where"] for r in found["requests"]] == ["gateway auth"]
    assert found["by_cause"] == {"gateway auth": 1}
    code, out, _ = run(capsys, "--zipkin", "http://z:9411", "--trace-id", "AB" * 16)
    assert code == 0 and FakeClient.asked == {"trace_id": "ab" * 16}
    assert out.splitlines()[-1] == "by cause: rate limit 1"
    assert not math.isnan(T0)
