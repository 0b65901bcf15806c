"""The third way in (``cosyvoice_otel.stage`` / ``fail`` / ``declare_*``): a fork's own step in
the request's tree, by the schema's rules, and nothing at all when tracing is off."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

import cosyvoice_otel
from cosyvoice_otel import masking
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import api
from cosyvoice_otel.sdk.redaction import MASK, RedactingSpanExporter

from ..support.tracing import stage_options


@pytest.fixture
def active(memory):
    api.activate(memory.provider, stage_options())
    yield memory
    api.deactivate()
    s.forget_declarations()


def request(memory, sampled: bool = True):
    """A request span (as a server's instrumentation would open), current in the block."""
    if sampled:
        return memory.tracer.start_as_current_span("POST /tts", kind=SpanKind.SERVER)
    unsampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(0)))
    return trace.use_span(unsampled, end_on_exit=False)


def test_a_stage_is_a_child_of_the_request_and_current_inside(active) -> None:
    with request(active) as req, cosyvoice_otel.stage("emotion_tagging", labels=3) as stage:
        inner = trace.get_current_span()
    (span,) = active.named("emotion_tagging")
    assert inner is stage.span and span.parent.span_id == req.get_span_context().span_id
    assert span.attributes["labels"] == 3 and span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope.name == "cosyvoice_otel.stage"  # the app's, masked


def test_outside_a_request_or_when_off_nothing_happens(active, memory) -> None:
    with cosyvoice_otel.stage("emotion_tagging") as stage:  # no request: no trace of its own
        assert stage is None
    api.deactivate()
    with request(memory), cosyvoice_otel.stage("emotion_tagging") as stage:  # tracing off
        assert stage is None
    assert memory.named("emotion_tagging") == []


def test_an_unsampled_request_exports_no_stage(active) -> None:
    with request(active, sampled=False), cosyvoice_otel.stage("emotion_tagging"):
        pass
    assert active.named("emotion_tagging") == []


def test_an_exception_marks_the_stage_and_the_request_and_reaches_the_caller(active) -> None:
    with pytest.raises(KeyError), request(active), cosyvoice_otel.stage("lookup"):
        raise KeyError("x")
    (span,) = active.named("lookup")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[s.ERROR_TYPE] == "KeyError"
    (req,) = active.named("POST /tts")
    assert req.attributes[s.ERROR_TYPE] == "KeyError"


def test_fail_gives_the_seeds_normalised_reason_and_an_event_with_the_figures(active) -> None:
    cosyvoice_otel.declare_reason("asr_empty_result", "the transcriber returned no text")
    with request(active), cosyvoice_otel.stage("asr_check"):
        cosyvoice_otel.fail("asr_empty_result", "ASR returned empty result", snr_db=4.5,
                            results=0)
    (span,) = active.named("asr_check")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[s.ERROR_TYPE] == "asr_empty_result"
    (event,) = span.events
    assert event.name == "ASR returned empty result"
    assert dict(event.attributes) == {"snr_db": 4.5, "results": 0}
    (req,) = active.named("POST /tts")
    assert req.attributes[s.ERROR_TYPE] == "asr_empty_result"
    assert "asr_empty_result" in s.all_reasons()


def test_fail_outside_a_stage_does_nothing_and_a_bad_reason_is_normalised(active,
                                                                          caplog) -> None:
    cosyvoice_otel.fail("asr_empty_result", "nothing to mark")  # no stage: no effect, no error
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        with request(active), cosyvoice_otel.stage("asr_check"):
            cosyvoice_otel.fail("Bad Reason!", "x")
            cosyvoice_otel.fail("Bad Reason!", "y")
    (span,) = active.named("asr_check")
    assert span.attributes[s.ERROR_TYPE] == "invalid_reason"
    (line,) = [r.getMessage() for r in caplog.records if "Bad Reason" in r.getMessage()]
    # the operator's line: which reason, the rule, and what was recorded instead
    assert line == ("cosyvoice-otel: bad error reason 'Bad Reason!' (lower-case words joined by "
                    "'_'); recorded as 'invalid_reason'")


def test_a_badly_named_stage_gets_no_span_and_one_warning(active, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        for _ in range(2):
            with request(active), cosyvoice_otel.stage("Emotion Tagging") as stage:
                assert stage is None
    assert active.named("Emotion Tagging") == []
    (line,) = [r.getMessage() for r in caplog.records if "Emotion Tagging" in r.getMessage()]
    assert line.startswith("cosyvoice-otel: ") and line.endswith("; that stage gets no span")


def test_the_decorator_on_a_function_a_generator_and_a_coroutine(active) -> None:
    @cosyvoice_otel.stage("rewrite", style="upper")
    def rewrite(text: str) -> str:
        assert trace.get_current_span().name == "rewrite"
        return text.upper()

    @cosyvoice_otel.stage("chunks")
    def chunks(n: int):
        for i in range(n):
            assert trace.get_current_span().name == "chunks"  # current while ITS code runs
            yield i

    @cosyvoice_otel.stage("fetch", source="cache")
    async def fetch() -> int:
        await asyncio.sleep(0)
        assert trace.get_current_span().name == "fetch"  # current across its awaits
        return 7

    with request(active):
        assert rewrite("abc") == "ABC"
        gen = chunks(3)
        assert next(gen) == 0
        assert trace.get_current_span().name == "POST /tts"  # not across a yield
        assert list(gen) == [1, 2]
        assert asyncio.run(fetch()) == 7
    names = [span.name for span in active.spans()]
    assert {"rewrite", "chunks", "fetch"} <= set(names)
    # the decorator's attributes, on its function's and its coroutine's spans
    assert active.named("rewrite")[0].attributes["style"] == "upper"
    assert active.named("fetch")[0].attributes["source"] == "cache"
    (chunk,) = active.named("chunks")
    (req,) = active.named("POST /tts")
    assert chunk.parent.span_id == req.context.span_id


def test_a_decorated_function_defined_before_tracing_starts_is_traced_once_it_does(
        memory) -> None:
    @cosyvoice_otel.stage("early")
    def early() -> int:
        return 1

    with request(memory):
        assert early() == 1  # not active yet: untouched
    api.activate(memory.provider, stage_options())
    try:
        with request(memory):
            assert early() == 1
    finally:
        api.deactivate()
    assert len(memory.named("early")) == 1


def test_the_apps_attributes_are_masked_like_any_third_partys(active) -> None:
    exported = []

    class Sink:
        def export(self, spans):
            exported.extend(spans)

        def shutdown(self):
            pass

    with request(active) as req:
        masking.remember(req.get_span_context().trace_id, ["the user's secret sentence"])
        with cosyvoice_otel.stage("rewrite", text="the user's secret sentence"):
            pass
    RedactingSpanExporter(Sink()).export(active.named("rewrite"))
    assert exported[0].attributes["text"] == MASK


def test_declared_stages_are_in_the_schema_and_the_metrics_labels(active) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from cosyvoice_otel.instrumentation.metrics import TtsMetrics

    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    api.activate(active.provider, stage_options(metrics=TtsMetrics(meters.get_meter("t"))))
    cosyvoice_otel.declare_stage("emotion_tagging", "tags the text with an emotion")
    with request(active):
        with cosyvoice_otel.stage("emotion_tagging"):
            pass
        with cosyvoice_otel.stage("not_declared"):
            pass
    labels = {point.attributes.get(s.STAGE)
              for rm in reader.get_metrics_data().resource_metrics
              for sm in rm.scope_metrics for metric in sm.metrics
              if metric.name == s.STAGE_DURATION for point in metric.data.data_points}
    assert labels == {"emotion_tagging", s.UNDECLARED}
    assert "## `emotion_tagging` (declared by the app)" in s.to_markdown()
    with pytest.raises(ValueError, match="built-in"):
        cosyvoice_otel.declare_stage("vocoder")
    with pytest.raises(ValueError, match="lower-case"):
        cosyvoice_otel.declare_stage("Bad Name")
    meters.shutdown()


def test_declarations_in_a_stage_map_file_reach_the_schema_command(tmp_path) -> None:
    import json
    import subprocess

    from ..support.helpers import BIN, ROOT

    path = tmp_path / "stages.toml"
    path.write_text('[[declare]]\nspan = "emotion_tagging"\nmeaning = "tags emotion"\n'
                    '[[reason]]\nname = "asr_empty_result"\nmeaning = "no text"\n'
                    '[[stage]]\ntarget = "myfork.engine:Engine.vocode"\nspan = "fork_vocoder"\n')
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "schema", "--format", "json",
                          "--stage-map", str(path)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    doc = json.loads(out.stdout)
    declared = {span["name"] for span in doc["spans"] if span["declared"]}
    assert declared == {"emotion_tagging", "fork_vocoder"}
    assert doc["error_reasons"]["asr_empty_result"] == "no text"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[declare]]\nspan = "Bad Name"\n')
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "schema", "--stage-map", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Bad Name" in out.stderr


# ------------------------------------------------ contained failures, by place, and limits

@pytest.fixture
def noted(monkeypatch):
    found: list[tuple[str, BaseException]] = []
    monkeypatch.setattr(api, "note_error", lambda place, exc: found.append((place, exc)))
    return found


def test_a_stage_that_cannot_open_is_noted_and_the_block_runs(active, noted,
                                                              monkeypatch) -> None:
    boom = RuntimeError("broken")

    def broken(*_a, **_k):
        raise boom

    monkeypatch.setattr(api, "StageSpan", broken)
    ran = []
    with request(active), cosyvoice_otel.stage("emotion_tagging") as stage:
        ran.append(stage)
    assert ran == [None] and noted == [("stage emotion_tagging", boom)]


def test_a_decorated_function_whose_stage_cannot_open_is_noted_by_its_name_and_runs(
        active, monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import stage_span

    boom = RuntimeError("broken")
    noted: list[tuple[str, BaseException]] = []
    monkeypatch.setattr(stage_span, "note_error", lambda place, exc: noted.append((place, exc)))

    def broken(*_a, **_k):
        raise boom

    monkeypatch.setattr(stage_span, "StageSpan", broken)

    @cosyvoice_otel.stage("rewrite")
    def rewrite(text: str) -> str:
        return text.upper()

    with request(active):
        assert rewrite("abc") == "ABC"
    # the place names the function, as the stage map's rows name their targets
    assert noted == [(f"start {__name__}:{rewrite.__qualname__}", boom)]


def test_a_failing_detach_is_noted_and_the_stage_still_ends(active, noted,
                                                            monkeypatch) -> None:
    boom = RuntimeError("detach")
    real = api.context

    class Context:
        """The context API whose detach does its work, then raises."""

        def __getattr__(self, name):
            return getattr(real, name)

        def detach(self, token):
            real.detach(token)
            raise boom

    monkeypatch.setattr(api, "context", Context())
    with request(active), cosyvoice_otel.stage("emotion_tagging"):
        pass
    assert noted == [("stage detach", boom)]
    assert len(active.named("emotion_tagging")) == 1


def test_the_stage_is_opened_under_the_current_context(active) -> None:
    with request(active) as req:
        stage = cosyvoice_otel.stage("emotion_tagging")
        with stage as opened:
            assert stage._open and stage._open[0][0] is opened
            assert trace.get_current_span() is opened.span
        assert trace.get_current_span() is req  # detached: the request is current again
    (span,) = active.named("emotion_tagging")
    assert span.parent.span_id == req.get_span_context().span_id


def test_fail_after_the_stage_ended_or_outside_is_silent(active, noted) -> None:
    cosyvoice_otel.fail("asr_empty_result")
    with request(active):
        with cosyvoice_otel.stage("asr_check") as opened:
            pass
        with trace.use_span(opened.span, end_on_exit=False):
            api.context.attach(api.context.set_value(api.STAGE_KEY, opened))
            cosyvoice_otel.fail("asr_empty_result", "late")
    assert noted == []
    (span,) = active.named("asr_check")
    assert span.status.status_code is StatusCode.UNSET and s.ERROR_TYPE not in span.attributes


def test_a_reason_at_the_longest_allowed_is_kept_and_the_message_defaults_to_it(
        active) -> None:
    reason = "r" * s.MAX_NAME
    with request(active), cosyvoice_otel.stage("asr_check"):
        cosyvoice_otel.fail(reason)
    (span,) = active.named("asr_check")
    assert span.attributes[s.ERROR_TYPE] == reason
    assert [event.name for event in span.events] == [reason]
