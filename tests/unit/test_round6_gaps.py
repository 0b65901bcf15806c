"""The second fresh batch's misses (issue 31, seed 61207, 2026-12-07): each a line a test ran
without looking at its effect, now one test each."""

from __future__ import annotations

import logging
import os
import types

import pytest
from opentelemetry import context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import cosyvoice_otel
from cosyvoice_otel import errors
from cosyvoice_otel.instrumentation import api


def test_a_stage_exited_where_its_context_was_lost_is_still_ended(monkeypatch) -> None:
    from collections import Counter

    monkeypatch.setattr(errors, "ERRORS", Counter())
    tracer = TracerProvider().get_tracer("test")
    api.activate(None, types.SimpleNamespace(cuda_sync=False, gpu_timing=None, metrics=None))
    try:
        with tracer.start_as_current_span("request"):
            region = api.stage("watermark")
            opened = region.__enter__()
            token = context.attach(context.Context())  # the app swapped the context meanwhile
            try:
                region.__exit__(None, None, None)  # this thread's latest entry is closed
            finally:
                context.detach(token)
            assert opened.ended
    finally:
        api.deactivate()
    assert errors.ERRORS == {}


def test_instrumenting_turns_the_stage_api_on_and_uninstrumenting_off() -> None:
    from cosyvoice_otel.instrumentation.instrumentor import CosyVoiceInstrumentor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("app").start_as_current_span("request"), \
                cosyvoice_otel.stage("emotion_tagging"):
            pass
    finally:
        inst.uninstrument()
    assert [span.name for span in memory.get_finished_spans()] == ["emotion_tagging", "request"]
    memory.clear()
    with provider.get_tracer("app").start_as_current_span("request"), \
            cosyvoice_otel.stage("emotion_tagging"):
        pass
    assert [span.name for span in memory.get_finished_spans()] == ["request"]


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("opentelemetry.instrumentation.auto_instrumentation._load",
                             logging.WARNING, __file__, 1, msg, args, None)


def test_the_loaders_filter_hides_only_the_notice_about_our_configurator() -> None:
    from cosyvoice_otel.sdk.distro import _OursIsLoaded

    quiet = _OursIsLoaded()
    assert quiet.filter(record("Configuration of %s not loaded because %s is set",
                               "configurator", "cosyvoice_otel")) is False
    assert quiet.filter(record("Failed to auto initialize OpenTelemetry")) is True
    assert quiet.filter(record("Configuration of %s not loaded because %s is set",
                               "configurator", "someone_else")) is True


def test_the_health_totals_count_the_values_replaced_by_redaction() -> None:
    from cosyvoice_otel.sdk.health import TracerHealth
    from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

    redacting = RedactingSpanExporter(InMemorySpanExporter())
    redacting.counters["placeholders"] = 3
    other = RedactingSpanExporter(InMemorySpanExporter())
    other.counters["placeholders"] = 2
    assert TracerHealth([redacting, other]).totals()["values_replaced"] == 5


@pytest.mark.parametrize("carrier", [{}, {"b3": "garbage"}, {"b3": "0"},
                                     {"x-b3-sampled": "1"}])
def test_b3_extraction_without_a_context_starts_from_an_empty_one(carrier) -> None:
    from cosyvoice_otel.sdk.propagation import StrictB3Propagator

    marker = context.create_key("test-marker")
    token = context.attach(context.set_value(marker, "the app's current context"))
    try:
        got = StrictB3Propagator().extract(carrier)
    finally:
        context.detach(token)
    assert isinstance(got, context.Context)
    assert context.get_value(marker, got) is None  # not built on whatever was current


def test_breached_alert_rules_show_the_actual_value_in_its_unit() -> None:
    from cosyvoice_otel.tools import report as rep

    group = rep.GroupStats("all", stages={
        "vocoder": rep.StageStats("vocoder", [2_000_000.0] * 4, errors=3)})
    rules = [rep.parse_rule("vocoder.p95>1s"), rep.parse_rule("vocoder.errors>=3"),
             rep.parse_rule("vocoder.count<2")]
    assert rep.evaluate({"all": group}, rules) == [
        "vocoder.p95>1s: actual 2.000 s (all)", "vocoder.errors>=3: actual 3 (all)"]


def test_a_jvm_whose_port_another_process_answers_is_stopped(tmp_path, monkeypatch) -> None:
    from cosyvoice_otel.tools import zipkin_server

    from ..support.loopback_server import LoopbackServer
    from .test_zipkin_commands import FAKE_JAVA, Health

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text(FAKE_JAVA.format(python=__import__("sys").executable))
    (bin_dir / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_JAVA", "other")
    monkeypatch.setenv("COSYVOICE_TRACED_CACHE", str(tmp_path / "cache"))
    stopped: list[int] = []
    real = zipkin_server.ZipkinServer.stop

    def stop(self, timeout: float = 20) -> None:
        stopped.append(self.pid)
        real(self, timeout)

    monkeypatch.setattr(zipkin_server.ZipkinServer, "stop", stop)
    other = LoopbackServer(Health, "/health")
    try:
        with pytest.raises(zipkin_server.ZipkinServerError, match="was taken"):
            zipkin_server.start(jar=tmp_path / "z.jar", port=other.port)
    finally:
        other.close()
    (pid,) = stopped  # our JVM, which never got the port, is not left running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- seed 71207's real misses (recorded run) ---------------------------------------------------

def test_keep_errors_never_buffers_a_sampled_span() -> None:
    from cosyvoice_otel.sdk.keep_errors import ErrorKeepingProcessor
    from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler

    kept = InMemorySpanExporter()
    keeper = ErrorKeepingProcessor(kept)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(1.0, keep_errors=True))
    provider.add_span_processor(keeper)
    with provider.get_tracer("t").start_as_current_span("request"):
        pass  # sampled: the batch processor exports it, the keeper has nothing to do
    assert keeper._traces == {} and keeper._spans == 0
    assert keeper.counters["evicted"] == 0 and kept.get_finished_spans() == ()
    keeper.shutdown()


def test_the_kafka_producer_gets_a_last_bounded_flush_at_shutdown(tmp_path) -> None:
    from .test_generated_gaps import RecordingProducer, _kafka_exporter

    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    try:
        exporter.shutdown()
        assert exporter.producer.flushed[-1] == 1.0  # what was purged reports, bounded
    finally:
        real.purge()


def test_the_comparison_text_ends_with_how_the_verdict_is_made() -> None:
    from cosyvoice_otel.tools import report as rep

    a = rep.GroupStats("a", stages={"vocoder": rep.StageStats("vocoder", [1.0] * 5)})
    b = rep.GroupStats("b", stages={"vocoder": rep.StageStats("vocoder", [1.0] * 5)})
    text = rep.compare_text(rep.compare({"a": a, "b": b}, "a", "b"), "v", "a", "b",
                            {"a": a, "b": b})
    assert text.splitlines()[-1] == (
        f"(verdict: Mann-Whitney U, two-sided p < {rep.ALPHA}, and medians apart by at least "
        f"{100 * rep.MIN_EFFECT:.0f}%; at least {rep.MIN_SAMPLES} samples a side)")


def test_verify_grpc_sends_the_prompts_samples() -> None:
    import sys
    from pathlib import Path

    from cosyvoice_otel.tools import verify

    from ..support.grpc_stub import inference_server

    received: list[bytes] = []

    def inference(request: bytes, context_):
        received.append(request)
        yield b"pcm"

    prompt = verify.wav_bytes(0.1)
    with inference_server(inference) as target:
        app = verify.GrpcApp(target)
        app.send(verify.Sent("a" * 32, "b3multi", "zero_shot", False, "CANARYG"), prompt,
                 lambda data: "")
        app.channel.close()
    proto = Path(__file__).resolve().parents[2] / "examples" / "grpc_proto"
    sys.path.insert(0, str(proto))
    try:
        import cosyvoice_pb2
    finally:
        sys.path.remove(str(proto))
    (request,) = [cosyvoice_pb2.Request.FromString(r) for r in received]
    import io
    import wave

    with wave.open(io.BytesIO(prompt), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
    assert frames and request.zero_shot_request.prompt_audio == frames
