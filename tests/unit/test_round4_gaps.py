"""The fourth generated-mutant batch's survivors (issue 31, seed 41207, 2026-12-07): each a
promise no test held, now one test each."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cosyvoice_otel import errors, masking, settings, urls
from cosyvoice_otel.instrumentation import api, instrumentor, routes
from cosyvoice_otel.instrumentation.instrumentor import CosyVoiceInstrumentor
from cosyvoice_otel.launcher import cli
from cosyvoice_otel.sdk import propagation, zipkin_http
from cosyvoice_otel.sdk.id_generator import IsolatedRandomIdGenerator
from cosyvoice_otel.tools import checks, verify

from ..support.grpc_stub import inference_server

TRACE = "a" * 32
ROOT = Path(__file__).resolve().parents[2]


def test_a_stage_entered_while_the_api_is_off_is_nothing_and_no_error() -> None:
    api.deactivate()
    before = sum(errors.ERRORS.values())
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request"), api.stage("emotion_tagging") as opened:
        assert opened is None
    # no tracing error was counted: off is a state, not a failure
    assert sum(errors.ERRORS.values()) == before


def test_a_bad_stage_map_file_is_one_warning_saying_the_built_in_map_is_used(
        tmp_path, caplog) -> None:
    bad = tmp_path / "stages.toml"
    bad.write_text("[[stage]]\nmodule = 3\n")
    inst = CosyVoiceInstrumentor()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        inst.instrument(tracer_provider=TracerProvider(), stage_map=str(bad))
        inst.uninstrument()
    (line,) = [r.getMessage() for r in caplog.records if "built-in stage map" in r.getMessage()]
    assert line.startswith("cosyvoice-otel: ") and line.endswith(
        "; using the built-in stage map only")
    assert str(bad) in line


def test_subclasses_are_found_at_every_depth() -> None:
    class Base:
        pass

    class Child(Base):
        pass

    class GrandChild(Child):
        pass

    class GreatGrandChild(GrandChild):
        pass

    assert set(instrumentor._subclasses(Base)) == {Child, GrandChild, GreatGrandChild}


def test_a_new_fastapi_route_declares_its_query_names_under_its_path() -> None:
    wrapper = routes.api_route_init(None, lambda: True)
    param = types.SimpleNamespace(name="speed", alias=None)
    route = types.SimpleNamespace(path="/inference_sft",
                                  dependant=types.SimpleNamespace(query_params=[param]))
    assert wrapper(lambda: "made", route, (), {}) == "made"
    assert masking.declared_query_names("/inference_sft") == frozenset({"speed"})


@pytest.mark.parametrize(("value", "written"), [
    ("plain", "plain"),
    ("two words", '"two words"'),
    ("C:\\voices x", '"C:\\\\voices x"'),  # a backslash doubled, not the other way round
    ('say "hi"', '"say \\"hi\\""'),
    ("$HOME x", '"\\$HOME x"'),
])
def test_dotenv_values_are_quoted_so_a_dotenv_reader_gets_them_back(value, written) -> None:
    assert cli._dotenv_quote(value) == written


def test_unpinning_a_trace_applies_the_registry_bound_at_once(monkeypatch) -> None:
    monkeypatch.setattr(masking, "MAX_TRACES", 1)
    masking.forget_all()
    for trace_id in (1, 2):  # two traces held by keep-errors: both kept over the bound
        masking.pin(trace_id)
        masking.remember(trace_id, [f"held text {trace_id}"])
    assert masking.known(1) and masking.known(2)
    masking.unpin(1)  # no longer held: the bound applies now, not at the next request
    assert not masking.known(1) and masking.known(2)
    masking.forget_all()


def test_trace_ids_are_declared_random() -> None:
    # the W3C "random" trace flag (level 2) is set from this: our ids are drawn at random
    assert IsolatedRandomIdGenerator().is_trace_id_random() is True


def test_a_kafka_replay_refused_for_good_leaves_the_spool(tmp_path) -> None:
    from tests.unit.test_generated_gaps import (
        RecordingProducer,
        _kafka_exporter,
        kafka_error,
        spans_payload,
    )

    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    try:
        exporter.spool.put(spans_payload(3))
        (path,) = exporter.spool.files()
        exporter._replaying = path
        exporter._report(kafka_error("MSG_SIZE_TOO_LARGE"), spans_payload(3), 3, path)
        # its halves went on to Kafka; the file they came from is gone (not sent twice)
        assert [len(json.loads(p)) for p in exporter.producer.produced] == [1, 2]
        assert exporter.spool.files() == []
        exporter.spool.put(spans_payload(2))
        (path,) = exporter.spool.files()
        exporter._report(kafka_error("TOPIC_AUTHORIZATION_FAILED"), spans_payload(2), 2, path)
        assert exporter.spool.files() == [] and exporter.dropped == {"rejected": 2}
    finally:
        exporter.shutdown()
        real.purge()


@pytest.mark.parametrize("header", [
    " 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1 ",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\t",
])
def test_a_single_b3_header_with_blanks_around_it_is_read(header) -> None:
    from opentelemetry import trace

    ctx = propagation.StrictB3Propagator().extract({"b3": header})
    span_context = trace.get_current_span(ctx).get_span_context()
    assert span_context.trace_id == 0x80f198ee56343ba864fe8b2a57d3eff7
    assert span_context.span_id == 0xe457b5a2e4d86bd1 and span_context.trace_flags.sampled


def test_the_spool_replayer_stops_when_the_exporter_closes_during_its_wait(
        tmp_path, monkeypatch) -> None:
    exporter = zipkin_http.ResilientZipkinExporter(
        endpoint="http://127.0.0.1:9/api/v2/spans", spool_dir=str(tmp_path), timeout=1,
        spool_max_bytes=1 << 20)
    try:
        exporter.spool.put(b"[]")
        replays: list[int | None] = []
        monkeypatch.setattr(exporter, "replay", lambda budget=None: replays.append(budget) or 0)

        def sleep_then_close(seconds: float) -> None:
            exporter._closed = True  # shutdown() while the loop waited

        monkeypatch.setattr(zipkin_http.time, "sleep", sleep_then_close)
        exporter._replay_loop()
        assert replays == []  # no post after shutdown
    finally:
        exporter._closed = False
        monkeypatch.undo()
        exporter.shutdown()


def test_an_unknown_gpu_timing_is_refused() -> None:
    assert settings.parse_gpu_timing(" Events ") == "events"
    with pytest.raises(ValueError, match="expected one of"):
        settings.parse_gpu_timing("sometimes")


def test_a_mode_specific_frontend_span_is_judged_like_the_generic_row() -> None:
    inference = {"traceId": TRACE, "id": "1", "name": "cosyvoice.inference", "timestamp": 10,
                 "duration": 5, "tags": {"cosyvoice.mode": "sft"}}
    orphan = {"traceId": TRACE, "id": "2", "parentId": "99", "name": "tts_frontend.sft",
              "timestamp": 11, "duration": 1}
    problems = checks.check_synthesis([inference, orphan], "sft")
    assert "tts_frontend.sft (2): parent 99 is not in the trace" in problems


def gradio_config(speakers: list) -> dict:
    props = [{}, {"choices": [["sft", "sft"], ["zero", "zero"]]}, {"choices": speakers}]
    return {"dependencies": [{"api_name": "generate_audio", "inputs": [0, 1, 2]}],
            "components": [{"id": i, "props": p} for i, p in enumerate(props)]}


@pytest.mark.parametrize(("speakers", "has"), [
    ([["中文女", "中文女"]], True),
    ([["", ""], ["英文男", "英文男"]], True),
    ([["", ""]], False),  # CosyVoice3 ships no preset speaker
    ([], False),
])
def test_verify_knows_whether_the_webui_offers_a_preset_speaker(speakers, has) -> None:
    assert verify.GradioApp("http://127.0.0.1:1", gradio_config(speakers)).has_speakers is has


def test_verify_grpc_turns_the_servers_error_into_one_line() -> None:
    import grpc

    def refuse(request: bytes, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text too long")
        yield b""

    with inference_server(refuse) as target:
        app = verify.GrpcApp(target)
        sent = verify.Sent(TRACE, "b3multi", "sft", False, "CANARYX")
        with pytest.raises(OSError, match="^gRPC INVALID_ARGUMENT: text too long$"):
            app.send(sent, None, lambda data: "")
        app.channel.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("http://zipkin:9411/api/v2/spans", ("http://zipkin:9411/api/v2/spans", None)),
    ("http://u:p%40ss@zipkin:9411/x", ("http://zipkin:9411/x",
                                        "Basic " + base64.b64encode(b"u:p@ss").decode())),
])
def test_credentials_are_split_from_a_url_only_when_it_has_some(url, expected) -> None:
    assert urls.split_credentials(url) == expected



def test_multi_b3_headers_with_blanks_around_them_are_read() -> None:
    from opentelemetry import trace

    ctx = propagation.StrictB3Propagator().extract({
        "x-b3-traceid": " 80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid": "e457b5a2e4d86bd1 ",
        "x-b3-sampled": "1\t"})
    span_context = trace.get_current_span(ctx).get_span_context()
    assert span_context.trace_id == 0x80f198ee56343ba864fe8b2a57d3eff7
    assert span_context.trace_flags.sampled


# -- each part of the SDK setup that fails is one warning naming it; tracing goes on ----------

CONFIGURE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s|%(message)s", stream=sys.stdout)
from cosyvoice_otel.sdk import configurator, meter
from opentelemetry import trace

def boom(*args, **kwargs):
    raise RuntimeError("boom")

part = sys.argv[1]
if part == "lifecycle":
    configurator.lifecycle.install = boom
elif part == "keep-errors":
    configurator.add_error_keeping = boom
elif part == "health":
    configurator.TracerHealth.register = boom
elif part == "metrics":
    meter.build_meter_provider = boom
configurator.CosyVoiceConfigurator()._configure()
with trace.get_tracer("t").start_as_current_span("s") as span:
    print("tracing", span.get_span_context().is_valid)
"""


@pytest.mark.parametrize(("part", "warning"), [
    ("none", None),
    ("lifecycle", "cosyvoice-otel: span clock / SIGTERM flush not installed (RuntimeError: boom)"),
    ("keep-errors", "cosyvoice-otel: keep-errors is off (RuntimeError: boom)"),
    ("health", "cosyvoice-otel: tracer-health metrics are off (RuntimeError: boom)"),
    ("metrics", "cosyvoice-otel: metrics are off (RuntimeError: boom)"),
])
def test_a_failing_part_of_the_sdk_setup_is_one_warning_and_tracing_goes_on(
        part, warning, tmp_path) -> None:
    from cosyvoice_otel.tools.net import free_port

    env = {**os.environ, "COSYVOICE_TRACED_EXPORTER": "none",
           "COSYVOICE_TRACED_METRICS": "prometheus", "COSYVOICE_TRACED_METRICS_HOST": "127.0.0.1",
           "COSYVOICE_TRACED_METRICS_PORT": str(free_port()),
           "COSYVOICE_TRACED_SPOOL_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", CONFIGURE, part], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "tracing True"
    ours = [line.partition("|")[2] for line in lines[:-1]]
    # the SDK's "Overriding of current MeterProvider" notice is expected: never shown
    assert not [line for line in lines if "Overriding" in line]
    assert ours == ([] if warning is None else [warning])


def test_a_traced_app_starts_without_a_line_of_the_loaders_notices() -> None:
    from cosyvoice_otel.tools.net import free_port

    done = subprocess.run(
        [str(Path(sys.executable).parent / "cosyvoice-traced"), "run", "--exporter", "none",
         "--metrics", "prometheus", "--metrics-host", "127.0.0.1", "--metrics-port",
         str(free_port()), "--", sys.executable, "-c", "print('app ran')"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == "app ran\n", done.stderr
    # neither the loader's "Configuration of configurator not loaded" (ours is) nor the
    # metrics API's override notice reaches the app's stderr
    assert done.stderr == ""


# -- the uncovered lines of the coverage map (2026-12-07): small promises, one test each ------

def test_a_streamed_response_with_tracing_off_is_sent_as_it_is(monkeypatch) -> None:
    import asyncio

    from cosyvoice_otel.instrumentation import stream_scope

    opened: list[str] = []
    monkeypatch.setattr(stream_scope, "enter_scope", lambda: opened.append("scope"))
    wrapper = stream_scope.streaming_response(None, lambda: False)

    async def send(*args, **kwargs):
        return ("sent", args, kwargs)

    assert asyncio.run(wrapper(send, None, (1,), {"k": 2})) == ("sent", (1,), {"k": 2})
    assert opened == []


def test_the_error_counter_is_reachable_from_the_package() -> None:
    import cosyvoice_otel.instrumentation as package

    assert package.ERRORS is errors.ERRORS
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


@pytest.mark.parametrize("text", ["text=-1", "audio=-0.5", "text=5,audio=-2"])
def test_a_negative_input_limit_is_refused(text) -> None:
    from cosyvoice_otel.limits import parse_input_limits

    with pytest.raises(ValueError, match="must not be negative"):
        parse_input_limits(text)


def test_a_stage_file_setting_is_its_absolute_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "stages.toml").write_text('[[declare]]\nspan = "watermark"\nmeaning = "m"\n')
    monkeypatch.chdir(tmp_path)
    assert settings.parse_stage_file(" stages.toml ") == str(tmp_path / "stages.toml")


@pytest.mark.parametrize(("ids", "single"), [
    (["a", "a"], True), (["a", "b"], False), ([], True), (["a", None], False)])
def test_a_trace_is_single_when_its_spans_share_one_id(ids, single) -> None:
    assert checks.single_trace([{"traceId": t} for t in ids]) is single


def test_nginx_needs_an_upstream() -> None:
    from cosyvoice_otel.tools import nginx

    with pytest.raises(ValueError, match="^--upstream is required$"):
        nginx.render([])


def test_report_stage_figures_by_name() -> None:
    from cosyvoice_otel.tools.report import (
        GroupStats,
        StageStats,
        _cell,
        distribution_svg,
        timeline_svg,
    )

    stats = StageStats("llm")
    stats.durations.extend([1000.0, 2000.0, 3000.0])
    stats.errors = 2
    assert stats.stat("errors") == 2.0 and stats.stat("count") == 3.0
    assert stats.stat("mean") == 2000.0
    assert _cell(None) == "-" and _cell(StageStats("llm")) == "-"
    assert distribution_svg(["llm"], [("a", {"llm": StageStats("llm")})]) == ""
    assert timeline_svg(GroupStats("all")) == ""


def test_zipkin_answering_traces_with_something_else_is_one_error() -> None:
    from cosyvoice_otel.tools.zipkin import ZipkinClient, ZipkinError

    client = ZipkinClient("http://127.0.0.1:9")
    client._get = lambda *args, **kwargs: {"not": "a list"}
    with pytest.raises(ZipkinError, match="^expected a list of traces, got dict$"):
        client.traces()


def test_a_url_that_cannot_be_read_is_shown_as_nothing() -> None:
    assert urls.shown("http://u:p@[::1") == "***"  # urlsplit: "Invalid IPv6 URL"
    assert urls.shown("http://user:pw@zipkin:9411/x") == "http://***@zipkin:9411/x"


def test_an_unencodable_tag_value_is_named_by_its_type() -> None:
    from cosyvoice_otel.sdk.zipkin_json import _placeholder

    assert _placeholder(object()) == "[unencodable object]"
    assert _placeholder(bytearray(b"ok")) == "ok"


@pytest.mark.parametrize(("error", "sent"), [
    ("ConnectTimeout", False),
    ("InvalidURL", False),
    ("ChunkedEncodingError", True),
    ("aborted", True),
    ("refused", False),
])
def test_which_failed_posts_may_have_reached_zipkin(error, sent) -> None:
    import requests
    import urllib3

    made = {
        "aborted": lambda: requests.ConnectionError(urllib3.exceptions.ProtocolError("aborted")),
        "refused": lambda: requests.ConnectionError(ConnectionRefusedError("refused")),
    }.get(error) or (lambda: getattr(requests.exceptions, error)("x"))
    assert zipkin_http._sent(made()) is sent


def test_a_counting_exporter_without_a_transport_counts_its_batch_as_an_error() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from cosyvoice_otel.sdk.export_base import CountingExporter

    from .test_export_base import finished

    class Bare(CountingExporter):
        def __init__(self) -> None:
            self._init_counting()

    exporter = Bare()
    assert exporter.export(finished(2)) is SpanExportResult.FAILURE
    assert exporter.dropped == {"export_error": 2}


def test_setting_aside_without_a_spool_does_nothing(tmp_path) -> None:
    exporter = zipkin_http.ResilientZipkinExporter(
        endpoint="http://127.0.0.1:9/api/v2/spans", spool_dir=str(tmp_path), timeout=1,
        spool_max_bytes=1 << 20)
    try:
        exporter.spool = None  # the spool folder could not be made: memory only
        exporter.set_aside(tmp_path / "gone.json", "spool_unreadable", "is unreadable")
        assert exporter.dropped == {}
    finally:
        exporter.shutdown()


def test_a_prompt_stream_that_cannot_seek_has_no_frame_count() -> None:
    import io
    import wave

    from cosyvoice_otel.instrumentation.audio_figures import _frames_after_header

    data = io.BytesIO()
    with wave.open(data, "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(b"\0\0" * 100)
    data.seek(0)

    class Pipe:
        def tell(self) -> int:
            raise OSError("illegal seek")

    with wave.open(data, "rb") as wav:
        assert _frames_after_header(Pipe(), wav) is None
        assert _frames_after_header(data, wav) == 100


def test_without_numpy_a_prompt_has_no_figures(monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import audio_figures

    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy: ImportError
    assert audio_figures.measure(b"RIFF....WAVE") == {}


def test_a_trace_id_of_zeros_is_drawn_again(monkeypatch) -> None:
    from cosyvoice_otel.sdk import id_generator

    draws = iter([0, 0, 7])
    monkeypatch.setattr(id_generator, "_rng", types.SimpleNamespace(
        getrandbits=lambda bits: next(draws)))
    assert id_generator.IsolatedRandomIdGenerator().generate_trace_id() == 7
    draws = iter([0, 9])
    assert id_generator.IsolatedRandomIdGenerator().generate_span_id() == 9


# -- the Kafka exporter's paths no test ran ---------------------------------------------------

@pytest.fixture
def kafka_rig(tmp_path):
    from tests.unit.test_generated_gaps import RecordingProducer, _kafka_exporter

    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    yield exporter
    exporter.producer = RecordingProducer()
    if exporter.spool is not None:
        for path in exporter.spool.files():
            exporter.spool.remove(path)
    exporter.shutdown()
    real.purge()


def test_a_new_batch_librdkafkas_full_queue_refuses_is_spooled_whole(kafka_rig) -> None:
    from tests.unit.test_generated_gaps import spans_payload

    def full(*args, **kwargs):
        raise BufferError("queue full")

    kafka_rig.producer.produce = full
    assert kafka_rig._produce(spans_payload(3), None) is False
    (path,) = kafka_rig.spool.files()
    assert kafka_rig.spool.read(path) == spans_payload(3)
    assert kafka_rig.counters["spooled"] == 3


def test_a_kafka_exporter_without_a_spool_has_nothing_to_replay(kafka_rig) -> None:
    kafka_rig.spool = None
    assert kafka_rig._replay_one() is False


@pytest.mark.parametrize(("failure", "set_aside"), [
    (ValueError("not a batch"), True), (OSError("I/O error"), True),
    (FileNotFoundError("replayed by another process"), False)])
def test_an_unreadable_kafka_spool_file_is_set_aside_counted(kafka_rig, failure,
                                                             set_aside) -> None:
    from tests.unit.test_generated_gaps import spans_payload

    kafka_rig.spool.put(spans_payload(2))

    def unreadable(path):
        raise failure

    kafka_rig.spool.read = unreadable
    assert kafka_rig._replay_one() is True
    assert kafka_rig._replaying is None and kafka_rig._claim is None  # free for the next
    assert kafka_rig.producer.produced == []
    bad = list((kafka_rig.spool.directory / "bad").glob("*")) if set_aside else []
    assert len(bad) == int(set_aside)
    assert kafka_rig.dropped == ({"spool_unreadable": 2} if set_aside else {})


def test_a_failing_kafka_poll_is_one_warning_and_a_pause(kafka_rig, monkeypatch, caplog) -> None:
    from cosyvoice_otel.sdk import kafka_exporter

    def broken(timeout=0):
        kafka_rig._closed = True  # one round of the loop
        raise RuntimeError("poll broke")

    slept: list[float] = []
    kafka_rig.producer.poll = broken
    monkeypatch.setattr(kafka_exporter.time, "sleep", slept.append)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        kafka_rig._poll_loop()
    kafka_rig._closed = False
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: Kafka poller: poll broke"]
    assert slept == [0.5]  # not a busy loop while it keeps failing


def test_a_failing_kafka_producer_shutdown_is_one_warning(kafka_rig, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("purge broke")

    kafka_rig.producer.purge = broken
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        kafka_rig.shutdown()
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: Kafka producer shutdown: purge broke"]


def test_a_kafka_error_that_says_retriable_is_tried_again() -> None:
    from confluent_kafka import KafkaError

    from cosyvoice_otel.sdk.kafka_exporter import _retriable

    assert _retriable(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, retriable=True)) is True
    assert _retriable(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)) is False


# -- verify reading traces back; the launcher's endpoint probe ---------------------------------

class Bar:
    def __init__(self, plan) -> None:
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)


def test_verify_counts_each_trace_once_it_is_ready(monkeypatch) -> None:
    from cosyvoice_otel.tools.zipkin import ZipkinError

    bad = verify.Sent(TRACE, "b3multi", "sft", False, "CANARYX", bad=True)
    answers = iter([ZipkinError("503"), [{"traceId": TRACE, "id": "1", "name": "gradio.event",
                                          "tags": {"error": "text_too_long"}}]])
    def trace(trace_id):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    zipkin = types.SimpleNamespace(trace=trace)
    monkeypatch.setattr(verify.time, "sleep", lambda s: None)
    bars: list[Bar] = []
    found = verify._collect(zipkin, [bad], timeout=60,
                            progress=lambda plan: bars.append(Bar(plan)) or bars[-1])
    assert found[TRACE][0]["id"] == "1"  # Zipkin's first error was "nothing yet", not a stop
    assert bars[0].updates == [1, 0]  # one step when it was ready, none left at the end


def test_verify_with_zipkin_failing_throughout_ends_with_nothing_found(monkeypatch) -> None:
    from cosyvoice_otel.tools.zipkin import ZipkinError

    sent = verify.Sent(TRACE, "b3multi", "sft", False, "CANARYX")

    def failing(trace_id):
        raise ZipkinError("503")

    clock = iter(range(100))
    monkeypatch.setattr(verify.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(verify.time, "sleep", lambda s: None)
    bars: list[Bar] = []
    found = verify._collect(types.SimpleNamespace(trace=failing), [sent], timeout=3,
                            progress=lambda plan: bars.append(Bar(plan)) or bars[-1])
    assert found == {TRACE: []} and bars[0].updates == [1]


def test_verify_grpc_without_grpcio_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(verify.VerifyError, match=r"^verify --grpc needs grpcio \(pip install"):
        verify.GrpcApp("127.0.0.1:1")


def test_the_endpoint_probe_is_skipped_where_it_cannot_fork(monkeypatch) -> None:
    from cosyvoice_otel.launcher import launcher

    def refused():
        raise OSError("fork: resource temporarily unavailable")

    monkeypatch.setattr(launcher.os, "fork", refused)
    assert launcher.check_endpoint_in_background("http://127.0.0.1:9") is None
    monkeypatch.delattr(launcher.os, "fork")  # a platform without fork
    assert launcher.check_endpoint_in_background("http://127.0.0.1:9") is None


# -- a failure inside tracing code is counted under its own place; the app goes on -------------

@pytest.fixture
def counted(monkeypatch):
    from collections import Counter

    monkeypatch.setattr(errors, "ERRORS", Counter())
    return errors.ERRORS


def memory_stage(name: str, **options):
    from opentelemetry import context

    from cosyvoice_otel.instrumentation.stage_span import StageSpan

    base = {"cuda_sync": False, "gpu_timing": None, "metrics": None}
    return StageSpan(TracerProvider().get_tracer("t"), name, context.Context(), None, {},
                     types.SimpleNamespace(**{**base, **options}))


def test_a_failing_required_zeros_lookup_is_counted_and_the_span_still_ends(
        counted, monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import stage_span

    def broken(name):
        raise KeyError(name)

    monkeypatch.setattr(stage_span.s, "required_zeros", broken)
    stage = memory_stage("vocoder")
    stage.fail(ValueError("model broke"))
    stage.end()
    assert counted == {"required attributes": 1} and not stage.span.is_recording()


def test_a_failing_span_end_is_counted(counted, monkeypatch) -> None:
    from cosyvoice_otel.instrumentation import stage_span

    def broken(span):
        raise RuntimeError("cuda sync failed")

    monkeypatch.setattr(stage_span, "_cuda_sync_into", broken)
    memory_stage("vocoder", cuda_sync=True).end()
    assert counted == {"StageSpan.end": 1}


def test_a_fail_call_that_breaks_inside_is_counted(counted) -> None:
    from opentelemetry import context

    from cosyvoice_otel.instrumentation.stage_span import STAGE_KEY

    class Broken:
        ended = False

        def mark_error(self, *args):
            raise RuntimeError("span gone")

    token = context.attach(context.set_value(STAGE_KEY, Broken()))
    try:
        api.fail("watermark_failed")  # the app's own call: never raises into it
    finally:
        context.detach(token)
    assert counted == {"fail": 1}


def test_a_route_without_a_path_is_counted_and_still_made(counted) -> None:
    wrapper = routes.api_route_init(None, lambda: True)
    assert wrapper(lambda: "made", types.SimpleNamespace(), (), {}) == "made"
    assert counted == {"fastapi APIRoute.__init__": 1}


def test_metrics_that_cannot_be_made_are_one_warning_and_tracing_goes_on(
        monkeypatch, caplog) -> None:
    from cosyvoice_otel.instrumentation import metrics as tts_metrics
    from cosyvoice_otel.instrumentation.instrumentor import build_options

    def broken(*args):
        raise RuntimeError("no meter")

    monkeypatch.setattr(tts_metrics, "create", broken)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        options = build_options({"metrics": "prometheus"}, settings.current())
    assert options.metrics is None
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: metrics are off (RuntimeError: no meter)"]


def test_an_exit_whose_entry_another_thread_took_does_nothing(counted) -> None:
    tracer = TracerProvider().get_tracer("test")
    api.activate(None, types.SimpleNamespace(cuda_sync=False, gpu_timing=None, metrics=None))
    try:
        with tracer.start_as_current_span("request"):
            region = api.stage("watermark")
            opened = region.__enter__()
            assert opened is not None

            class Taken(list):
                def remove(self, value):
                    raise ValueError("already removed")

            region._open = Taken(region._open)
            region.__exit__(None, None, None)
            assert not opened.ended  # the other thread's exit ends it, not this one
            region._open = list(region._open)
            region.__exit__(None, None, None)
            assert opened.ended
    finally:
        api.deactivate()
    assert counted == {}


def test_a_stage_named_in_the_settings_is_patched(process_settings) -> None:
    import cosyvoice_otel.urls as target

    process_settings({"COSYVOICE_TRACED_STAGE": "url_shown=cosyvoice_otel.urls:shown"})
    original = target.shown
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=TracerProvider())
    try:
        assert target.shown is not original  # wrapped: a span named url_shown per call
        assert instrumentor._is_our_wrapper(target.shown)
    finally:
        inst.uninstrument()
    assert target.shown is original


def test_a_value_of_no_known_kind_is_its_type_name_counted() -> None:
    from cosyvoice_otel.sdk.redaction import Redactor

    redactor = Redactor()
    assert redactor._value("k", object(), None, False, None) == "[unencodable object]"
    assert redactor.placeholders == 1


def test_an_unencodable_tag_is_one_warning_naming_its_key(caplog) -> None:
    from cosyvoice_otel.sdk.zipkin_json import _tags

    with caplog.at_level(logging.WARNING):
        assert _tags({"ok": 1, "odd": object()}) == {"ok": "1"}
    assert [r.getMessage() for r in caplog.records] == ["Could not serialize tag odd"]


def test_who_listens_is_unknowable_without_proc(monkeypatch) -> None:
    from cosyvoice_otel.tools import net

    monkeypatch.setattr(net, "_listening_inodes", lambda port: None)
    assert net.owns_listener(os.getpid(), 80) is None


def test_a_spool_file_that_cannot_be_renamed_keeps_its_name(tmp_path, monkeypatch) -> None:
    from cosyvoice_otel.sdk.spool import Spool

    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.put(b"[]")
    (path,) = spool.files()

    def refused(self, target):
        raise OSError("read-only file system")

    monkeypatch.setattr(Path, "replace", refused)
    assert spool.mark(path, 1, flight=True) == path and path.exists()


def test_a_missing_optional_patch_target_is_a_debug_line_naming_it(caplog) -> None:
    from cosyvoice_otel.instrumentation.instrumentor import Patch

    inst = object.__new__(CosyVoiceInstrumentor)
    inst._warned = set()
    patch = Patch("gradio.queueing", "Queue.no_such_method", lambda tracer, enabled: None, "")
    with caplog.at_level(logging.DEBUG, logger="cosyvoice_otel"):
        inst._apply(types.SimpleNamespace(Queue=type("Queue", (), {})), patch)
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: gradio.queueing:Queue.no_such_method not found"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
