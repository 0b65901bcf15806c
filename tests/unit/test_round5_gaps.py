"""The survivors of a wide look with the unit tests alone (issue 31, 700 generated mutants,
seed 777, 2026-12-07): each line a unit test ran without looking at its effect, now one
test each."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest
from opentelemetry import context
from opentelemetry.sdk.trace import TracerProvider

from cosyvoice_otel import errors, masking, schema
from cosyvoice_otel.instrumentation import extractors as ex
from cosyvoice_otel.instrumentation import gpu_timing
from cosyvoice_otel.instrumentation.stage_span import StageSpan

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def counted(monkeypatch):
    from collections import Counter

    monkeypatch.setattr(errors, "ERRORS", Counter())
    return errors.ERRORS


def stage(name: str, parent: StageSpan | None = None, **options) -> StageSpan:
    base = {"cuda_sync": False, "gpu_timing": None, "metrics": None, "hash_salt": None,
            "max_prompt_seconds": 0.0, "max_text_chars": 0}
    ctx = parent.ctx if parent is not None else context.Context()
    return StageSpan(TracerProvider().get_tracer("cosyvoice_otel"), name, ctx, None, {},
                     types.SimpleNamespace(**{**base, **options}))


# -- instrumentation ---------------------------------------------------------------------------

def test_without_cuda_a_gpu_timed_stage_is_ended_by_its_caller(counted) -> None:
    timer = gpu_timing.GpuTimer()
    timer._cuda = lambda: None  # CUDA gone between the stage's start and its end
    mark = gpu_timing.GpuMark(None, 0, -1)
    assert timer.end(object(), mark, 0) is False
    assert timer._queue.qsize() == 0 and counted == {}


def test_the_gpu_resolver_ends_quietly_at_its_sentinel(monkeypatch) -> None:
    timer = gpu_timing.GpuTimer()
    timer._queue.put(None)
    timer._resolve_loop()  # returns: no TypeError from resolving "None"
    assert timer._queue.unfinished_tasks == 0


def test_a_first_token_outside_model_tts_is_not_attributed(counted) -> None:
    request = stage(schema.INFERENCE)
    llm = stage("acoustic_model", parent=request)
    ex._first_token(llm)
    assert schema.LLM_FIRST_TOKEN_MS not in (request.span.attributes or {})
    assert "first_token" not in request.counters


def test_a_stage_name_that_passes_the_check_is_returned() -> None:
    assert schema.check_name("emotion_tagging") == "emotion_tagging"


def test_stage_spans_off_patches_no_stage(process_settings) -> None:
    from cosyvoice_otel.instrumentation.instrumentor import CosyVoiceInstrumentor

    process_settings({"COSYVOICE_TRACED_STAGE_SPANS": "false"})
    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=TracerProvider())
    try:
        assert inst._rows == {}
    finally:
        inst.uninstrument()


# -- the SDK side ------------------------------------------------------------------------------

def test_our_exporters_get_their_arguments_from_the_settings(process_settings) -> None:
    from cosyvoice_otel.sdk import configurator
    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter
    from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter

    chosen = process_settings({"COSYVOICE_TRACED_ZIPKIN_ENDPOINT": "http://z:9411/api/v2/spans",
                               "COSYVOICE_TRACED_EXPORT_TIMEOUT": "7",
                               "COSYVOICE_TRACED_ZIPKIN_FILE": "/tmp/spans.json"})
    table = configurator.EXPORTERS_BY_NAME
    args = {ResilientZipkinExporter: table["zipkin"].args(chosen),
            ZipkinFileExporter: table["zipkin-file"].args(chosen)}
    assert args[ResilientZipkinExporter] == {
        "endpoint": "http://z:9411/api/v2/spans", "timeout": 7.0,
        "spool_dir": chosen.spool_root, "spool_max_bytes": chosen.spool_max_bytes,
        "pipelined": True}
    assert args[ZipkinFileExporter] == {"path": "/tmp/spans.json"}


SAMPLER = """
from opentelemetry import trace
from cosyvoice_otel.sdk import configurator
configurator.CosyVoiceConfigurator()._configure()
provider = trace.get_tracer_provider()
processors = provider._active_span_processor._span_processors
print(" ".join(type(p).__name__ for p in processors))
print(type(provider.sampler).__name__, provider.sampler.get_description())
"""


def test_the_configured_sampler_is_ours_with_the_rate_set(tmp_path) -> None:
    from cosyvoice_otel import settings
    from cosyvoice_otel.launcher import child_env

    rendered = child_env.render(settings.Settings.resolve(
        {"exporter": "zipkin-file", "zipkin_file": str(tmp_path / "s.json"),
         "sampling_rate": "0.25"}, environ={}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    done = subprocess.run([sys.executable, "-c", SAMPLER], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**env, **rendered})
    assert done.returncode == 0, done.stderr
    processors, sampler = done.stdout.splitlines()
    name, description = sampler.split(" ", 1)
    assert name == "DeferAwareRatioSampler" and "0.25" in description
    # below 1 with keep-errors: failed traces the ratio drops are kept by their own processor
    assert processors.split() == ["BatchSpanProcessor", "ErrorKeepingProcessor"]


def test_the_rate_from_our_variable_alone_reaches_the_sdks_sampler() -> None:
    # pure environment configuration (a container without the launcher): OTEL_TRACES_SAMPLER
    # names our sampler, the rate is COSYVOICE_TRACED_SAMPLING_RATE, no OTEL_TRACES_SAMPLER_ARG
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    env.update({"OTEL_TRACES_SAMPLER": "cosyvoice_ratio", "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                "COSYVOICE_TRACED_SAMPLING_RATE": "0.25"})
    done = subprocess.run([sys.executable, "-c", SAMPLER], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    name, description = done.stdout.splitlines()[-1].split(" ", 1)
    assert name == "DeferAwareRatioSampler" and "0.25" in description


def test_a_zipkin_file_that_cannot_be_written_counts_the_batch_lost(tmp_path) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter

    from .test_export_base import finished

    exporter = ZipkinFileExporter(str(tmp_path / "no-such-folder" / "spans.json"))
    assert exporter.export(finished(3)) is SpanExportResult.FAILURE
    assert exporter.dropped == {"export_error": 3} and exporter.counters["sent"] == 0
    good = ZipkinFileExporter(str(tmp_path / "spans.json"))
    good.export(finished(2))
    good.export(finished(1))
    assert len(json.loads((tmp_path / "spans.json").read_text())) == 3  # appended, whole


def test_a_kafka_error_that_only_mentions_size_is_not_a_size_refusal() -> None:
    from confluent_kafka import KafkaError

    from cosyvoice_otel.sdk.kafka_exporter import _too_large

    assert _too_large(KafkaError(KafkaError._INVALID_ARG, "batch.size is out of range")) is False
    assert _too_large(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) is True


def test_a_kafka_replay_holds_its_claim_until_its_delivery_report(tmp_path) -> None:
    from .test_generated_gaps import RecordingProducer, _kafka_exporter, spans_payload

    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    released: list[int | None] = []
    try:
        exporter.spool.put(spans_payload(2))
        assert exporter._replay_one() is True
        flying, claim = exporter._replaying, exporter._claim
        assert flying is not None and claim is not None  # no second replay meanwhile
        assert exporter._replay_one() is False
        exporter.spool.release, real_release = released.append, exporter.spool.release
        exporter._report(None, spans_payload(2), 2, flying)
        assert released == [claim] and exporter._claim is None and exporter._replaying is None
        assert exporter.spool.files() == []
        real_release(claim)
    finally:
        exporter.shutdown()
        real.purge()


def test_the_kafka_spool_is_under_the_settings_spool_folder(tmp_path, process_settings) -> None:
    from cosyvoice_otel.sdk.configurator import build_exporter
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter
    from cosyvoice_otel.settings import EXPORTERS_BY_NAME

    chosen = process_settings({"COSYVOICE_TRACED_SPOOL_DIR": str(tmp_path / "spool"),
                               "COSYVOICE_TRACED_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    exporter = build_exporter(EXPORTERS_BY_NAME["kafka"], chosen)
    assert isinstance(exporter, KafkaZipkinExporter)
    try:
        assert exporter.spool.directory.parent == tmp_path / "spool"
    finally:
        exporter.producer.purge()
        exporter.shutdown()


def test_a_trace_that_gets_a_new_span_is_the_last_evicted() -> None:
    from opentelemetry import trace

    from .test_keep_errors import make

    tracer, processor, _ = make({"max_traces": 2})
    a, b = tracer.start_span("a"), tracer.start_span("b")
    tracer.start_span("c", context=trace.set_span_in_context(a)).end()  # a is newest now
    tracer.start_span("d").end()  # over the bound at its end: b goes, not a
    assert list(processor._traces)[0] == a.get_span_context().trace_id
    assert b.get_span_context().trace_id not in processor._traces
    processor.shutdown()


def test_flush_at_exit_drains_each_drain_in_both_rounds_even_from_a_generator() -> None:
    from cosyvoice_otel.sdk import lifecycle

    calls: list[str] = []
    provider = types.SimpleNamespace(force_flush=lambda ms: calls.append("flush"))
    lifecycle.flush_everything(provider, (d for d in [lambda s: calls.append("drain")]), 5000)
    assert calls == ["drain", "flush", "drain"] * 2


def test_a_reader_with_nothing_collected_serves_nothing_not_an_old_collection() -> None:
    from cosyvoice_otel.sdk.prometheus import PrometheusExemplarReader
    from cosyvoice_otel.tools.net import free_port

    reader = PrometheusExemplarReader("127.0.0.1", free_port())
    try:
        reader._latest = "an earlier collection"
        assert reader.scrape() is None  # not attached to a provider: nothing to collect
    finally:
        reader.shutdown()


def test_redaction_of_nothing_is_nothing_and_a_failing_value_is_one_placeholder() -> None:
    from cosyvoice_otel.sdk.redaction import Redactor

    redactor = Redactor()
    assert redactor._attributes(None, None) is None
    assert redactor._attributes({}, None) is None

    def hostile(key, value, *args):
        if key == "bad":
            redactor.placeholders += 5  # counted some, then failed
            raise RuntimeError("cannot read it")
        return value

    redactor._value = hostile
    out = redactor._attributes({"ok": 1, "bad": object()}, None)
    assert out["ok"] == 1 and out["bad"] == "[unencodable object]"
    assert redactor.placeholders == 1  # once, whatever it counted before it failed


def test_a_reason_on_our_own_span_is_masked_like_any_value() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cosyvoice_otel.sdk.redaction import OUR_SCOPE, Redactor

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer(OUR_SCOPE).start_as_current_span("check") as span:
        masking.remember(span.get_span_context().trace_id, ["hunter two secret"])
        span.set_attribute(schema.ERROR_TYPE, "hunter two secret")
    (finished,) = memory.get_finished_spans()
    redacted = Redactor().redact(finished)
    assert "hunter two secret" not in str(redacted.attributes[schema.ERROR_TYPE])
    masking.forget_all()


def test_a_spool_over_its_cap_says_so_and_a_vanished_folder_lists_nothing(tmp_path) -> None:
    import shutil

    from cosyvoice_otel.sdk.spool import Spool

    spool = Spool(tmp_path / "spool", 10)
    assert spool.put(b"x" * 11) is False and spool.last_failure == "spool_cap"
    shutil.rmtree(tmp_path / "spool")
    assert spool.files() == []


def test_the_exporter_closes_its_http_session_at_shutdown(tmp_path) -> None:
    from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter

    exporter = ResilientZipkinExporter(endpoint="http://127.0.0.1:9/api/v2/spans",
                                       spool_dir=str(tmp_path), timeout=1,
        spool_max_bytes=1 << 20)
    closed: list[bool] = []
    real = exporter.session.close
    exporter.session.close = lambda: (closed.append(True), real())
    exporter.shutdown()
    assert closed == [True]


# -- tools -------------------------------------------------------------------------------------

def test_a_class_exists_defined_or_imported_and_not_otherwise(tmp_path, monkeypatch) -> None:
    from cosyvoice_otel.tools import doctor

    from .test_doctor_checks import _tree

    monkeypatch.chdir(tmp_path)
    root = _tree(tmp_path, {"fork/__init__.py": "",
                            "fork/a.py": "class A:\n    def run(self):\n        pass\n\n"
                                         "class B(A):\n    pass\n",
                            "fork/b.py": "from fork.a import A\n"})
    assert doctor._class_exists("fork.a", "A", [root])
    assert doctor._class_exists("fork.b", "A", [root])  # imported
    assert not doctor._class_exists("fork.a", "Z", [root])
    assert not doctor._class_exists("fork.nowhere", "A", [root])
    assert doctor.find_method("fork.a", "B", "run", [root]) == "fork.a:A"  # base, same module


def test_without_proc_no_listener_is_known(monkeypatch) -> None:
    from cosyvoice_otel.tools import net

    def no_proc(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(net, "open", no_proc, raising=False)
    assert net._listening_inodes(80) is None


def test_by_note_is_silent_without_a_tag_or_for_concurrency() -> None:
    from cosyvoice_otel.tools import report as rep

    groups = {"(none)": rep.GroupStats("(none)")}
    assert rep.by_note(groups, None) is None
    assert rep.by_note(groups, rep.CONCURRENCY) is None
    assert rep.by_note(groups, "service.version") is not None


def test_zipkin_queries_leave_out_what_was_not_given() -> None:
    from cosyvoice_otel.tools.zipkin import ZipkinClient

    from ..support.loopback_server import LoopbackServer, QuietHandler

    paths: list[str] = []

    class Zipkin(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            paths.append(self.path)
            self.reply(200, b"[]", "application/json")

    with LoopbackServer(Zipkin, "") as server:
        ZipkinClient(server.endpoint).traces(service="tts", limit=5)
    assert paths == ["/api/v2/traces?serviceName=tts&limit=5"]


def test_stopping_a_slow_process_waits_between_looks(monkeypatch) -> None:
    from cosyvoice_otel.tools import zipkin_server

    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    slept: list[float] = []
    real_sleep = zipkin_server.time.sleep
    here = threading.current_thread()

    def sleep(seconds: float) -> None:
        if threading.current_thread() is here:  # time.sleep is global: other threads sleep too
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(zipkin_server.time, "sleep", sleep)
    zipkin_server.ZipkinServer(child.pid, 1, "").stop(timeout=20)
    assert child.poll() is not None
    assert slept and set(slept) == {0.1}  # a look every 0.1 s, not a busy loop
    child.stdout.close()


def test_a_zipkin_log_goes_where_asked_its_folder_made(tmp_path, monkeypatch) -> None:
    from .test_zipkin_commands import FAKE_JAVA

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text(FAKE_JAVA.format(python=sys.executable))
    (bin_dir / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_JAVA", "crash")
    from cosyvoice_otel.tools import zipkin_server

    log = tmp_path / "new" / "folder" / "zipkin.log"
    with pytest.raises(zipkin_server.ZipkinServerError, match="Invalid or corrupt jarfile"):
        zipkin_server.start(jar=tmp_path / "z.jar", log_path=log)
    assert "Invalid or corrupt jarfile" in log.read_text()


def test_gradio_rest_data_before_any_event_line_is_read(monkeypatch) -> None:
    from cosyvoice_otel.tools.gradio_rest import GradioRest

    from .test_gradio_rest import gradio

    with gradio(['data: ["early"]', "event: complete", 'data: ["whole"]']) as app:
        assert GradioRest(app.endpoint).call("generate_audio", []) == ["whole"]


def test_a_stream_past_its_deadline_is_closed_before_the_error() -> None:
    from cosyvoice_otel.tools.gradio_rest import GradioError, GradioRest

    class Response:
        closed = False

        def __iter__(self):
            yield b"event: generating\n"
            yield b"data: [1]\n"

        def close(self) -> None:
            self.closed = True

    client = GradioRest("http://127.0.0.1:9", deadline=-1.0)  # already past
    response = Response()
    with pytest.raises(GradioError, match="no result within"):
        list(client._lines(response, "generate_audio"))
    assert response.closed


def test_nginx_refuses_an_upstream_that_is_not_host_port() -> None:
    from cosyvoice_otel.tools import nginx

    with pytest.raises(ValueError, match="--upstream"):
        nginx.render(["127.0.0.1:8000", "not a host"])


def test_the_trace_check_names_a_wrong_stream_flag() -> None:
    from cosyvoice_otel.tools.checks import check_synthesis

    spans = [{"traceId": "a" * 32, "id": "1", "name": schema.INFERENCE, "timestamp": 1,
              "duration": 5, "tags": {schema.MODE: "sft", schema.STREAM: "false"}}]
    problems = check_synthesis(spans, "sft", stream=True)
    assert f"{schema.INFERENCE}: {schema.STREAM}='false', expected True" in problems
    assert not any(schema.STREAM in p for p in check_synthesis(spans, "sft", stream=False))


def test_a_fastapi_request_body_ends_with_the_closing_boundary() -> None:
    from cosyvoice_otel.tools import verify

    from ..support.loopback_server import LoopbackServer, QuietHandler

    bodies: list[tuple[str, bytes]] = []

    class App(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies.append((self.headers["Content-Type"], body))
            self.reply(200, b"ok", "text/plain")

    with LoopbackServer(App, "") as server:
        verify.FastApiApp(server.endpoint).send(
            verify.Sent("a" * 32, "b3multi", "sft", False, "CANARYB"), None, lambda d: "")
    ((kind, body),) = bodies
    boundary = kind.split("boundary=")[1]
    assert body.endswith(f"--{boundary}--\r\n".encode())


def test_the_demo_waits_for_the_four_stages_and_prints_them_as_a_tree(tmp_path,
                                                                     monkeypatch) -> None:
    from cosyvoice_otel.tools import demo

    from .test_demo_paths import Rig

    rig = Rig(tmp_path, monkeypatch)
    asked: list = []
    zipkin = rig.zipkin()
    zipkin.wait_for_trace = lambda trace_id, ready, timeout: asked.append(ready) or rig.spans
    monkeypatch.setattr(demo.ZipkinClient, "from_endpoint", staticmethod(lambda e: zipkin))
    rig.spans = [
        {"id": "1", "name": "gradio.event", "timestamp": 0, "duration": 100_000},
        {"id": "3", "parentId": "1", "name": "vocoder", "timestamp": 50, "duration": 20_000},
        {"id": "2", "parentId": "1", "name": "cosyvoice.inference", "timestamp": 10,
         "duration": 80_000},
        {"id": "4", "parentId": "2", "name": "model.tts", "timestamp": 20, "duration": 60_000}]
    assert rig.run() == 0
    (ready,) = asked
    assert ready(rig.spans) and not ready(rig.spans[:3])  # all four stages, not three
    assert rig.lines[0] == "starting: cosyvoice-traced run ... -- python examples/webui.py"
    tree = [line for line in rig.lines if line.startswith("  ")]
    assert [line.split()[0] for line in tree] == ["gradio.event", "cosyvoice.inference",
                                                  "model.tts", "vocoder"]
    assert tree[0].startswith("  gradio.event") and tree[2].startswith("      model.tts")
    assert tree[1].startswith("    cosyvoice.inference")


def test_the_demo_says_where_the_trace_goes_without_a_local_zipkin(tmp_path,
                                                                   monkeypatch) -> None:
    from cosyvoice_otel.tools import demo, zipkin_server

    from .test_demo_paths import Rig

    rig = Rig(tmp_path, monkeypatch)

    def no_java(port):
        raise zipkin_server.ZipkinServerError("java not found: Zipkin needs Java 17+\nmore")

    monkeypatch.setattr(zipkin_server, "start_detached", no_java)
    monkeypatch.setattr(demo, "_wait_for_file_trace", lambda path, trace_id, timeout: None)
    with pytest.raises(demo.DemoError):
        rig.run(endpoint=None)
    trace_file = tmp_path / "cosyvoice-demo-trace.json"
    assert rig.lines[0] == (f"no local Zipkin (java not found: Zipkin needs Java 17+); "
                            f"writing Zipkin JSON to {trace_file} instead: load it in a Zipkin "
                            "UI with 'Upload JSON'")


def test_report_refuses_a_zipkin_url_that_is_not_http(capsys) -> None:
    from cosyvoice_otel.launcher import cli

    try:
        code = cli.main(["report", "--zipkin", "zipkin:9411"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cosyvoice-traced: error: ") and err.count("\n") == 1


def test_the_stripping_getter_lists_the_carriers_keys() -> None:
    from opentelemetry.propagators.textmap import default_getter

    from cosyvoice_otel.sdk.propagation import _Stripped

    assert _Stripped(default_getter).keys({"b3": "1", "x": "2"}) == ["b3", "x"]
    assert _Stripped(default_getter).get({"b3": " 1 "}, "b3") == ["1"]



def test_a_stage_ended_twice_is_measured_and_ended_once(counted, caplog) -> None:
    ended: list[str] = []
    recorder = types.SimpleNamespace(stage_ended=lambda stage: ended.append(stage.name))
    once = stage("vocoder", metrics=recorder)
    once.end()
    with caplog.at_level(logging.WARNING):
        once.end(abandoned=True)  # the generator's close after its exhaustion, say
    assert ended == ["vocoder"] and counted == {}
    # the SDK was not asked to end it again, nor to mark an ended span abandoned
    assert caplog.records == []


def test_a_file_that_cannot_be_written_is_said_so(tmp_path, caplog) -> None:
    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter

    from .test_export_base import finished

    target = tmp_path / "no-such-folder" / "spans.json"
    with caplog.at_level(logging.WARNING):
        ZipkinFileExporter(str(target)).export(finished(2))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"cosyvoice-otel: dropped 2 spans: cannot write {target} (")


def test_verify_readiness_of_a_good_request_is_the_trace_check() -> None:
    from cosyvoice_otel.tools import verify

    sent = verify.Sent("a" * 32, "b3multi", "sft", False, "CANARYR")
    only_inference = [{"traceId": "a" * 32, "id": "1", "name": schema.INFERENCE,
                       "timestamp": 1, "duration": 5, "tags": {schema.MODE: "sft"}}]
    assert verify._ready(sent)(only_inference) is False  # stages missing: not yet


# -- the fresh batch's survivors (seed 51207, recorded in statement-mutants.txt) ---------------

def test_a_pipelined_exporters_sender_ends_at_shutdown(tmp_path) -> None:
    from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter

    exporter = ResilientZipkinExporter(endpoint="http://127.0.0.1:9/api/v2/spans",
                                       spool_dir=str(tmp_path), timeout=1, pipelined=True,
                                       spool_max_bytes=1 << 20)
    (sender,) = [t for t in threading.enumerate() if t.name == "cosyvoice-otel-send"
                 and t.is_alive() and t._target.__self__ is exporter]
    exporter.shutdown()
    sender.join(10)  # a hang, not a time: the sentinel ends the loop at once
    assert not sender.is_alive()
    assert exporter.counters["failures"] == 0 and exporter.spool.files() == []


def test_a_file_exporter_batch_written_is_a_success(tmp_path) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from cosyvoice_otel.sdk.file_exporter import ZipkinFileExporter

    from .test_export_base import finished

    exporter = ZipkinFileExporter(str(tmp_path / "spans.json"))
    assert exporter.export(finished(2)) is SpanExportResult.SUCCESS
    assert exporter.counters["sent"] == 2


def test_declaring_a_stage_gives_back_its_definition() -> None:
    definition = schema.declare_stage("watermark_check", "checks the watermark")
    assert (definition.name, definition.meaning) == ("watermark_check", "checks the watermark")
    assert schema.known_stage("watermark_check")


@pytest.mark.parametrize("value", ["", None, ["a list"], 7])
def test_a_speaker_argument_that_is_not_a_named_id_is_no_speaker(value) -> None:
    from cosyvoice_otel.instrumentation.stage_span import Call

    request = stage(schema.INFERENCE)
    model = types.SimpleNamespace(spk2info={"": {}, "中文女": {}})  # CosyVoice3 lists ""
    call = Call(model, (value,), {}, {"zero_shot_spk_id": 0})
    assert ex._speaker(request, call, "zero_shot_spk_id") is None


def test_refusing_a_spool_entry_that_is_not_a_file_leaves_no_descriptor_open(tmp_path) -> None:
    from cosyvoice_otel.sdk.spool import _open_regular

    fifo = tmp_path / "batch.json"
    os.mkfifo(fifo)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ValueError, match="not a regular file"):
            _open_regular(fifo)
    assert len(os.listdir("/proc/self/fd")) == before


def test_compare_json_names_its_sides_and_each_stages_figures() -> None:
    from cosyvoice_otel.tools import report as rep

    a = rep.GroupStats("1.0", stages={"vocoder": rep.StageStats("vocoder", [10.0] * 6)},
                       requests=[(100.0, "t")] * 6)
    b = rep.GroupStats("1.1", stages={"vocoder": rep.StageStats("vocoder", [30.0] * 6)},
                       requests=[(300.0, "u")] * 6)
    groups = {"1.0": a, "1.1": b}
    doc = rep.compare_dict(rep.compare(groups, "1.0", "1.1"), "service.version", "1.0", "1.1",
                           groups)
    assert (doc["key"], doc["a"], doc["b"]) == ("service.version", "1.0", "1.1")
    assert doc["requests"] == {"1.0": 6, "1.1": 6}
    vocoder = doc["stages"]["vocoder"]
    assert vocoder["a"] == {"count": 6, "p50_us": 10.0, "p95_us": 10.0}
    assert vocoder["b"] == {"count": 6, "p50_us": 30.0, "p95_us": 30.0}
    assert vocoder["delta_p50"] == pytest.approx(2.0) and vocoder["verdict"] == "slower"
