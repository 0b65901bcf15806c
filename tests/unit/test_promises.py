"""Promises a careful reviewer broke without a test noticing (issue 31, gaps 1-9): each test
here was run against the promise broken the plausible way (a deleted line, a flipped
comparison, a swapped field: see TESTING.md's ledger) and failed there."""

from __future__ import annotations

import io
import json
import logging
import os
import stat

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

import cosyvoice_otel
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import api, extractors
from cosyvoice_otel.instrumentation.stage_span import Call
from cosyvoice_otel.sdk import keep_errors as ke
from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler
from cosyvoice_otel.sdk.spool import Spool
from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter
from cosyvoice_otel.tools import report as rep
from cosyvoice_otel.tools import verify
from cosyvoice_otel.tools.zipkin import normalize

from ..support.helpers import fake_monotonic
from ..support.scripted_zipkin import ScriptedZipkin
from ..support.tracing import finished_spans, stage_options


@pytest.fixture
def active(memory):
    api.activate(memory.provider, stage_options())
    api._WARNED.clear()
    yield memory
    api.deactivate()
    api._WARNED.clear()


# -- 1, 2. the decorator outside a request, and badly named

def test_gap1_a_decorated_function_outside_a_request_does_nothing(active, monkeypatch) -> None:
    made = []
    monkeypatch.setattr(api, "StageWrapper", lambda *a, **k: made.append(a) or None)

    @cosyvoice_otel.stage("emotion_tagging")
    def tag(text: str) -> str:
        return text.upper()

    @cosyvoice_otel.stage("emotion_stream")
    def stream(n: int):
        yield from range(n)

    assert tag("abc") == "ABC" and list(stream(3)) == [0, 1, 2]  # no current span at all
    assert active.spans() == [] and made == []  # not even a wrapper was built


def test_gap2_a_badly_named_decorated_stage_gets_no_span_and_one_warning(active,
                                                                         caplog) -> None:
    @cosyvoice_otel.stage("Emotion Tagging")
    def tag(text: str) -> str:
        return text + "!"

    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        with active.tracer.start_as_current_span("POST /tts", kind=SpanKind.SERVER):
            assert [tag("a"), tag("b")] == ["a!", "b!"]
    assert [span.name for span in active.spans()] == ["POST /tts"]
    lines = [r.getMessage() for r in caplog.records if "Emotion Tagging" in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith("that stage gets no span")


# -- 3. a prompt that is not a WAV: the app's file object stays where it was

@pytest.mark.parametrize("position", [0, 3])
def test_gap3_reading_a_prompt_that_is_not_a_wav_leaves_the_file_where_it_was(
        memory, position) -> None:
    from opentelemetry import context

    from cosyvoice_otel.instrumentation.stage_span import StageSpan

    prompt = io.BytesIO(b"ID3 this is an mp3, not a wav at all" * 10)
    prompt.seek(position)
    stage = StageSpan(memory.tracer, "audio_preprocess.speech_feat", context.Context(), None,
                      {}, stage_options(max_prompt_seconds=15.0))
    extractors.Audio().start(stage, Call(None, (prompt,), {}, {}))
    assert prompt.tell() == position


# -- 4. a half timing out during bisection: the other half is not posted

def test_gap4_when_a_half_times_out_the_other_half_waits_untried(tmp_path) -> None:
    # the whole batch refused (400), its first half never answered in time
    # margins wide: a busy machine answers "at once" slowly (0.2 s was seen too tight)
    stub = ScriptedZipkin(lambda n: (400, 0) if n == 1 else (202, 4.0))
    try:
        exporter = ResilientZipkinExporter(stub.endpoint, 1.5, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        exporter.export(finished_spans(4))
        assert len(stub.bodies) == 2  # the batch, then its first half: the second never sent
        files = exporter.spool.files()
        tries = sorted(Spool.tries(f) for f in files)
        assert tries == [0, 1]  # the late half marked (resent once more), the other untried
        untried = next(f for f in files if Spool.tries(f) == 0)
        first = json.loads(stub.bodies[1])
        assert {sp["id"] for sp in json.loads(untried.read_bytes())}.isdisjoint(
            {sp["id"] for sp in first})
        assert exporter.dropped == {}
    finally:
        stub.close()


# -- 5. an existing 0755 spool folder becomes 0700 (also tests/unit/test_trust_seams.py)

def test_gap5_an_existing_open_spool_folder_is_closed_to_others(tmp_path) -> None:
    folder = tmp_path / "spool" / "abc"
    folder.mkdir(parents=True, mode=0o755)
    os.chmod(folder, 0o755)
    Spool(folder, 1 << 20)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# -- 6. keep-errors: a late span after the root ended keeps the trace; a late failure exports all

def test_gap6_a_span_started_after_the_root_ended_is_not_swept_while_open(monkeypatch) -> None:
    clock = fake_monotonic(monkeypatch, ke)
    kept = InMemorySpanExporter()
    processor = ErrorKeepingProcessor(kept, grace_s=10)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(0.0, keep_errors=True))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        root = tracer.start_span("join request", kind=SpanKind.SERVER)
        root.end()  # the join request answered; the Gradio event runs later
        clock.now += 5  # within the grace
        late = tracer.start_span("gradio.event", context=trace.set_span_in_context(root))
        clock.now += 30  # far past the grace, while the late span is still open
        with tracer.start_as_current_span("another request"):
            pass  # a sweep is due: it must pass over the open trace
        assert root.get_span_context().trace_id in processor._traces
        late.set_status(Status(StatusCode.ERROR, "boom"))
        late.end()
        processor.force_flush()
        names = sorted(span.name for span in kept.get_finished_spans())
        assert names == ["gradio.event", "join request"]  # the whole trace, root included
    finally:
        processor.shutdown()


# -- 7, 8. report: five values are five groups; --compare judges by the medians

def request_trace(trace_id: str, value: str) -> list[dict]:
    return normalize([{"traceId": trace_id, "id": "1", "name": s.INFERENCE, "timestamp": 1,
                       "duration": 10, "kind": "SERVER", "tags": {s.AUDIO_SNR_DB: value}}])


@pytest.mark.parametrize("values", [["1", "2", "3", "4", "5"], ["a", "b", "c", "d", "e"],
                                    ["1", "2", "3", "4", "5", "nan"]])  # nan set aside
def test_gap7_five_distinct_values_are_five_groups(values) -> None:
    traces = [request_trace(f"{i:032x}", v) for i, v in enumerate(values * 2)]
    assert sorted(rep.analyse(traces, by=s.AUDIO_SNR_DB)) == sorted(values)


def stats(values: list[float]) -> rep.StageStats:
    return rep.StageStats("vocoder", sorted(values))


def test_gap8_the_verdict_follows_the_medians_not_the_tails() -> None:
    base = [100.0 + i for i in range(17)] + [200.0, 201.0, 202.0]
    # the same median, a far slower tail: no change
    tail = [*base[:-3], 1000.0, 1001.0, 1002.0]
    row = rep.StageComparison("vocoder", stats(base), stats(tail))
    assert row.delta("p95") > 1 and abs(row.delta("p50")) < rep.MIN_EFFECT
    assert row.verdict == "no significant change"
    # a slower median, the same tail: slower
    body = [120.0 + i for i in range(17)] + base[-3:]  # the same tail
    row = rep.StageComparison("vocoder", stats(base), stats(body))
    assert row.delta("p50") >= rep.MIN_EFFECT and row.p_value < rep.ALPHA
    assert row.delta("p95") == pytest.approx(0.0, abs=0.01)
    assert row.verdict == "slower"


# -- 9. verify fails when a request's text is stored

TRACE = "a" * 32


@pytest.mark.parametrize("bad", [False, True])
def test_gap9_verify_fails_when_the_requests_text_is_in_zipkin(bad) -> None:
    sent = verify.Sent(TRACE, "b3multi", "sft", False, "CANARYLEAK", bad=bad)
    tags = {s.MODE: "sft", "error": "x", s.ERROR_TYPE: "text_too_long"}
    clean = normalize([{"traceId": TRACE, "id": "1", "name": s.INFERENCE, "timestamp": 1,
                        "duration": 5, "tags": tags}])
    leaking = normalize([{**clean[0], "tags": {**tags, "exception.message": "bad CANARYLEAK"}}])
    by_name = {c.name.rsplit(": ", 1)[1]: c for c in verify._check_one(sent, leaking)}
    assert by_name["no request text stored"].ok is False
    assert "appears in Zipkin" in by_name["no request text stored"].reason
    clean_checks = {c.name.rsplit(": ", 1)[1]: c for c in verify._check_one(sent, clean)}
    assert clean_checks["no request text stored"].ok is True
    report = verify.Report("fastapi")
    report.checks.extend(verify._check_one(sent, leaking))
    assert not report.ok


def test_kafka_cluster_ids_never_start_with_a_dash() -> None:
    from ..support.kafka_server import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(not i.startswith("-") and len(i) == 22 for i in ids)
    assert len(set(ids)) == len(ids)


def test_promise_ledger_names_only_tests_that_exist() -> None:
    """TESTING.md's ledger: every test it names is a test function of the suite."""
    from ..support.helpers import ROOT

    ledger = (ROOT / "docs" / "promises.md").read_text(encoding="utf-8")
    named = set()
    for cell in ledger.split("`"):
        if "::" in cell and cell.startswith("tests/"):
            named.add(cell)
    assert len(named) > 30
    for ref in named:
        path, _, name = ref.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert f"def {name.split('[')[0]}(" in source, ref

