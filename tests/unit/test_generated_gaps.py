"""What the second generated-mutant run found no test executing (issue 31): a statement deleted
in each of these went unnoticed because no test ran its line at all (the seeded package-wide
sample of 2026-12-07, ``tests/support/statement_mutants.py --sample 160 --seed 1207``).
Each test is named by the promise it keeps, not by the mutant."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import wrapt
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cosyvoice_otel import errors, stage_rows
from cosyvoice_otel.instrumentation import gpu_timing, stream_scope
from cosyvoice_otel.instrumentation.instrumentor import CosyVoiceInstrumentor
from cosyvoice_otel.instrumentation.stage_map import Role, Stage
from cosyvoice_otel.instrumentation.stage_span import Extractor, StageWrapper
from cosyvoice_otel.tools import doctor, zipkin_server
from cosyvoice_otel.tools import report as rep

from ..support.tracing import stage_options


@pytest.fixture
def counted(monkeypatch) -> Counter:
    monkeypatch.setattr(errors, "ERRORS", Counter())
    return errors.ERRORS


def test_gpu_timing_off_makes_no_timer(monkeypatch) -> None:
    monkeypatch.setattr(gpu_timing, "_TIMER", None)
    assert gpu_timing.create("off") is None
    assert gpu_timing._TIMER is None  # no resolver thread waiting for a first stage either
    assert isinstance(gpu_timing.create("auto"), gpu_timing.GpuTimer)


def test_a_part_that_cannot_be_patched_is_one_warning_naming_it_and_why(caplog) -> None:
    # a C type's method (no signature to wrap, no attribute to set): the part a role found
    # is refused; the app goes on, one warning says which method and why. A bare instrumentor
    # (not the process's singleton) with the one piece of state _instrument gives _adopt_part
    instrumentor = object.__new__(CosyVoiceInstrumentor)
    instrumentor._warned = set()
    role = Role("clock", "isoformat", "clock.isoformat")
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        instrumentor._adopt_part(datetime.date, role)
        instrumentor._adopt_part(datetime.date, role)  # the same target again: no second line
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "datetime:date.isoformat could not be patched (ValueError" in lines[0]
    assert datetime.date.isoformat is not None and datetime.date(2026, 1, 2).isoformat() == "2026-01-02"


def test_a_generator_tracing_cannot_wrap_is_still_the_apps_generator(monkeypatch,
                                                                     counted) -> None:
    def broken(self, gen, parent, call):
        raise RuntimeError("wrapping broke")

    monkeypatch.setattr(StageWrapper, "_traced_generator", broken)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    wrapper = StageWrapper(provider.get_tracer("t"), Stage("m", "f", "stage"), Extractor(),
                           stage_options(), {}, True, lambda: True)
    calls = []

    def numbers():  # called once per request: the app's own generator, handed back as it is
        calls.append(1)
        return iter((1, 2, 3))

    traced = wrapt.FunctionWrapper(numbers, wrapper)
    assert list(traced()) == [1, 2, 3]
    assert calls == [1]  # never called a second time to make up for the failed wrap
    assert counted == {"wrap m:f": 1} and memory.get_finished_spans() == ()


def test_a_stream_scope_that_cannot_open_still_sends_the_response(monkeypatch, counted) -> None:
    def broken():
        raise RuntimeError("no scope")

    monkeypatch.setattr(stream_scope, "enter_scope", broken)
    wrapper = stream_scope.streaming_response(None, lambda: True)
    sent = []

    async def respond(*args, **kwargs):
        sent.append(args)
        return "sent"

    assert asyncio.run(wrapper(respond, None, ("scope", "receive", "send"), {})) == "sent"
    assert sent == [("scope", "receive", "send")]
    assert counted == {"stream scope": 1}


def test_a_declarations_meaning_that_is_not_text_is_refused(tmp_path) -> None:
    path = tmp_path / "stages.toml"
    path.write_text('[[declare]]\nspan = "my_stage"\nmeaning = 5\n', encoding="utf-8")
    with pytest.raises(stage_rows.StageMapError, match=r"declare #1: meaning must be a string"):
        stage_rows.stage_source(str(path))
    path.write_text('[[reason]]\nname = "my_reason"\nmeaning = ["a"]\n', encoding="utf-8")
    with pytest.raises(stage_rows.StageMapError, match=r"reason #1: meaning must be a string"):
        stage_rows.stage_source(str(path))


def test_doctor_falls_back_to_the_first_date_when_zipkin_stops_answering() -> None:
    # a refused connection at the first probe: the offset from the single Date read, with its
    # full half-second-plus-round-trip uncertainty (never a sharper claim than it has)
    ticks = iter(float(n) for n in range(100, 200))
    offset, error = doctor.clock_offset("http://127.0.0.1:9/", first=1000.0, started=990.0,
                                        finished=992.0, now=lambda: next(ticks))
    assert offset == pytest.approx(1000.0 + 0.5 - 991.0)
    assert error == pytest.approx(0.5 + 1.0)


@pytest.mark.parametrize("text", ["soon", "15", "1w", "-5m", ""])
def test_report_refuses_a_lookback_that_is_not_a_duration(text) -> None:
    with pytest.raises(rep.ReportError, match="--lookback: expected a duration"):
        rep.parse_lookback(text)


def test_an_explicit_zipkin_jar_is_that_file_or_none(monkeypatch, tmp_path) -> None:
    jar = tmp_path / "zipkin.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv("ZIPKIN_JAR", str(jar))
    assert zipkin_server.find_jar() == jar
    # a named jar that is not there is not silently replaced by another one found elsewhere
    monkeypatch.setenv("ZIPKIN_JAR", str(tmp_path / "missing.jar"))
    assert zipkin_server.find_jar() is None
    monkeypatch.setenv("ZIPKIN_JAR", str(tmp_path))  # a folder is no jar
    assert zipkin_server.find_jar() is None


def _kafka_exporter(tmp_path: Path, **kwargs):
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter

    # no broker listens on port 9: librdkafka connects in its own threads, never at creation
    exporter = KafkaZipkinExporter(**{"bootstrap_servers": "127.0.0.1:9", "topic": "zipkin",
                                      "spool_dir": str(tmp_path / "spool"),
                                      "spool_max_bytes": 1 << 20, **kwargs})
    # the tests play the poller's part themselves: its thread is stopped, or it would replay
    # (claim, rename, produce) the spool a test is filling, at moments of its own
    exporter._closed = True
    exporter._poller.join(10)
    assert not exporter._poller.is_alive()
    exporter._closed = False  # open again for what the test calls, shutdown() included
    return exporter


def test_the_kafka_exporter_takes_the_topic_from_the_settings(tmp_path, process_settings) -> None:
    from cosyvoice_otel.settings import EXPORTERS_BY_NAME

    chosen = process_settings({"COSYVOICE_TRACED_KAFKA_TOPIC": "voice-spans"})
    exporter = _kafka_exporter(tmp_path, topic=EXPORTERS_BY_NAME["kafka"].args(chosen)["topic"])
    try:
        assert exporter.topic == "voice-spans"
    finally:
        exporter.shutdown()


def test_a_kafka_replay_the_full_queue_refuses_stops_and_keeps_the_batch(tmp_path) -> None:
    # librdkafka's queue holds one message; Kafka is away, so it never drains: the next
    # message is a BufferError, and the replay loop must stop there (not wait on a flush)
    exporter = _kafka_exporter(tmp_path, topic="zipkin",
                               config={"queue.buffering.max.messages": 1,
                                       "message.timeout.ms": 600_000})
    try:
        exporter.producer.produce("zipkin", b"[]")  # fills the queue
        batch = json.dumps([{"traceId": "1" * 32, "id": "2" * 16, "name": "x"}]).encode()
        exporter.spool.put(batch)
        assert exporter._replay_one() is False
        assert exporter.spool.size > 0 and exporter._replaying is None
    finally:  # nothing left for shutdown's own flush and replay to wait on
        exporter.producer.purge()
        for path in exporter.spool.files():
            exporter.spool.remove(path)
        exporter.shutdown()


# -- the same run's survivors whose line a test ran but whose effect no test looked at

def test_a_mixed_sequence_is_counted_as_a_replaced_value() -> None:
    from cosyvoice_otel.sdk.redaction import Redactor

    redactor = Redactor()
    assert redactor._value("figures", [1, 2], None, False, None) == (1, 2)
    assert redactor.placeholders == 0  # a clean sequence is kept as it is, uncounted
    assert redactor._value("figures", [1, "a"], None, False, None) == ("1", "a")
    assert redactor.placeholders == 1


def test_copies_set_aside_are_bounded_like_moved_batches(tmp_path, monkeypatch) -> None:
    from cosyvoice_otel.sdk import spool as spool_module
    from cosyvoice_otel.sdk.spool import Spool

    monkeypatch.setattr(spool_module, "MAX_BAD_BYTES", 25)
    spool = Spool(tmp_path / "spool", 1 << 20)
    for i in range(4):  # names sort by time: the later, the newer
        spool.copy_aside(Path(f"{100 + i}-1-0.json"), b"x" * 10)
    assert sorted(p.name for p in (spool.directory / "bad").iterdir()) == [
        "102-1-0.json", "103-1-0.json"]


def test_the_probe_of_a_listening_endpoint_says_nothing(capsys) -> None:
    from cosyvoice_otel.launcher.launcher import _probe

    from ..support.loopback_server import LoopbackServer, QuietHandler

    with LoopbackServer(QuietHandler, "/api/v2/spans") as server:
        _probe(server.endpoint, 5.0)
    assert capsys.readouterr().err == ""
    _probe("http://127.0.0.1:9/api/v2/spans", 5.0)  # nothing listens on port 9
    assert "did not answer" in capsys.readouterr().err


def test_no_meter_provider_is_made_for_metrics_none(process_settings, monkeypatch) -> None:
    from opentelemetry import metrics
    from opentelemetry.sdk.resources import Resource

    from cosyvoice_otel.sdk import configurator

    # metrics off costs nothing at start: no provider, and not even the resource detection
    made, detected = [], []
    monkeypatch.setattr(metrics, "set_meter_provider", made.append)
    monkeypatch.setattr(Resource, "create", lambda *a, **k: detected.append(a) or Resource({}))
    assert configurator.install_meter_provider(process_settings({}), {}) is None
    assert made == [] and detected == []


class _EntryPoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.given: dict = {}

    def load(self):
        entry = self

        class Instrumentor:
            def instrument(self, **kwargs) -> None:
                entry.given = kwargs

        return Instrumentor


@pytest.mark.parametrize(("environ", "excluded"), [
    ({}, ["receive", "send"]),  # the ASGI per-message spans: off by default (--http-io-spans)
    ({"COSYVOICE_TRACED_HTTP_IO_SPANS": "true"}, None),
])
def test_fastapi_is_loaded_without_per_message_spans_unless_asked(process_settings, environ,
                                                                  excluded) -> None:
    from cosyvoice_otel.sdk.distro import CosyVoiceDistro

    process_settings(environ)
    entry = _EntryPoint("fastapi")
    CosyVoiceDistro().load_instrumentor(entry, skip_dep_check=True)
    assert entry.given.get("exclude_spans") == excluded
    other = _EntryPoint("requests")  # other instrumentors get what the SDK gives them
    CosyVoiceDistro().load_instrumentor(other, skip_dep_check=True)
    assert "exclude_spans" not in other.given


@pytest.mark.parametrize("listen", ["nonsense", "0.0.0.0:0", "0.0.0.0:70000", ""])
def test_nginx_config_refuses_a_listen_address_that_is_not_host_port(listen) -> None:
    from cosyvoice_otel.tools import nginx

    with pytest.raises(ValueError, match="--listen must be HOST:PORT"):
        nginx.render("127.0.0.1:8000", listen=listen)


def test_every_option_row_is_a_flag_of_run_and_env() -> None:
    from cosyvoice_otel import settings as table
    from cosyvoice_otel.launcher import cli

    for command in (cli.cli.commands["run"], cli.cli.commands["env"]):
        flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        for option in table.OPTIONS:
            assert set(option.flag.split("/")) <= flags, (command.name, option.flag)


def test_verify_takes_1_to_100_requests() -> None:
    import click

    from cosyvoice_otel.launcher import cli

    (requests,) = [p for p in cli.cli.commands["verify"].params if p.name == "count"]
    assert requests.type.convert("1", requests, None) == 1
    assert requests.type.convert("100", requests, None) == 100
    for bad in ("0", "101"):
        with pytest.raises(click.BadParameter):
            requests.type.convert(bad, requests, None)


def test_a_started_process_that_ignores_sigterm_is_killed_after_its_grace() -> None:
    import subprocess
    import sys

    from cosyvoice_otel.tools.net import stop

    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                              "print('ready', flush=True)\n"
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    stop(child, grace=0.2)
    assert child.returncode == -9  # SIGTERM ignored, then killed: never left running
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop(polite, grace=30)
    assert polite.returncode == -15  # SIGTERM was enough


def test_a_kafka_replay_already_on_its_way_is_not_started_twice(tmp_path) -> None:
    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    try:
        batch = json.dumps([{"traceId": "1" * 32, "id": "2" * 16, "name": "x"}]).encode()
        exporter.spool.put(batch)
        (waiting,) = exporter.spool.files()
        exporter._replaying = tmp_path / "on-its-way.json"  # the poller's replay, in flight
        assert exporter._replay_one() is False
        assert exporter.spool.files() == [waiting]  # not claimed, not marked in flight
    finally:
        exporter._replaying = None
        for path in exporter.spool.files():
            exporter.spool.remove(path)
        exporter.shutdown()


# -- the Kafka exporter's delivery reports, settled in memory (the e2e tests kill the apps
# whose reports these are): each outcome of a report is what the module docstring promises

class RecordingProducer:
    """Stands in for librdkafka's producer after construction: what was produced."""

    def __init__(self) -> None:
        self.produced: list[bytes] = []
        self.flushed: list[float] = []

    def produce(self, topic: str, payload: bytes, on_delivery=None) -> None:
        self.produced.append(payload)

    def __len__(self) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.flushed.append(timeout)
        return 0

    def purge(self, *args, **kwargs) -> None:
        pass


def spans_payload(count: int) -> bytes:
    return json.dumps([{"traceId": "1" * 32, "id": f"{i + 1:016x}", "name": "x"}
                       for i in range(count)]).encode()


@pytest.fixture
def kafka(tmp_path):
    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    yield exporter
    for path in exporter.spool.files():
        exporter.spool.remove(path)
    exporter.shutdown()
    real.purge()


def kafka_error(name: str):
    from confluent_kafka import KafkaError

    return KafkaError(getattr(KafkaError, name))


def test_kafka_away_keeps_the_batch_in_the_spool(kafka) -> None:
    kafka._report(kafka_error("_MSG_TIMED_OUT"), spans_payload(2), 2, None)
    assert kafka.counters["failures"] == 1 and kafka.counters["spooled"] == 2
    assert len(kafka.spool.files()) == 1 and not kafka.dropped


def test_kafka_too_large_is_split_in_halves_and_a_single_span_dropped(kafka) -> None:
    kafka._report(kafka_error("MSG_SIZE_TOO_LARGE"), spans_payload(3), 3, None)
    assert kafka.counters["split"] == 1
    assert [len(json.loads(p)) for p in kafka.producer.produced] == [1, 2]
    kafka._report(kafka_error("MSG_SIZE_TOO_LARGE"), spans_payload(1), 1, None)
    assert kafka.dropped == {"too_large": 1} and kafka.counters["split"] == 1


def test_kafka_any_other_refusal_drops_the_batch_counted(kafka) -> None:
    kafka._report(kafka_error("TOPIC_AUTHORIZATION_FAILED"), spans_payload(4), 4, None)
    assert kafka.dropped == {"rejected": 4} and kafka.spool.files() == []


def test_a_kafka_replay_delivered_is_counted_and_its_file_removed(kafka) -> None:
    kafka.spool.put(spans_payload(2))
    (path,) = kafka.spool.files()
    kafka._replaying, kafka._maybe_sent = path, True  # resent after a crash mid-flight
    kafka._report(None, spans_payload(2), 2, path)
    assert kafka.counters["sent"] == 2 and kafka.counters["replayed"] == 2
    assert kafka.counters["maybe_duplicated"] == 2
    assert kafka.spool.files() == [] and kafka._replaying is None


def test_a_kafka_replay_that_fails_again_stays_no_longer_in_flight(kafka) -> None:
    from cosyvoice_otel.sdk.spool import Spool

    kafka.spool.put(spans_payload(2))
    (path,) = kafka.spool.files()
    flying = kafka.spool.mark(path, 0, flight=True)
    kafka._replaying = flying
    kafka._report(kafka_error("_TRANSPORT"), spans_payload(2), 2, flying)
    (left,) = kafka.spool.files()
    assert not Spool.in_flight(left) and kafka.counters["spooled"] == 0  # not a second copy


@pytest.mark.parametrize(("err", "large"), [
    ("MSG_SIZE_TOO_LARGE", True), ("_TRANSPORT", False)])
def test_which_kafka_refusals_are_about_size(err, large) -> None:
    from confluent_kafka import KafkaException

    from cosyvoice_otel.sdk.kafka_exporter import _too_large

    assert _too_large(kafka_error(err)) is large
    assert _too_large(KafkaException(kafka_error(err))) is large
    assert _too_large(ValueError("Message size too large")) is True
    assert _too_large(ValueError("unknown topic")) is False


@pytest.mark.parametrize(("err", "again"), [
    ("_MSG_TIMED_OUT", True), ("_PURGE_QUEUE", True), ("_ALL_BROKERS_DOWN", True),
    ("NETWORK_EXCEPTION", True), ("_RESOLVE", True), ("TOPIC_AUTHORIZATION_FAILED", False),
    ("MSG_SIZE_TOO_LARGE", False)])
def test_which_kafka_errors_are_worth_another_try(err, again) -> None:
    from cosyvoice_otel.sdk.kafka_exporter import _retriable

    assert _retriable(kafka_error(err)) is again


def test_kafka_drain_waits_for_librdkafkas_reports_within_its_bound(kafka) -> None:
    kafka.drain(2.5)  # at exit: what was handed over is delivered or spooled, bounded
    assert kafka.producer.flushed == [2.5]


def test_a_second_kafka_shutdown_does_nothing(kafka) -> None:
    kafka.shutdown()
    flushed = list(kafka.producer.flushed)
    kafka.shutdown()  # the SDK's and the exit hook's: once is the work
    assert kafka.producer.flushed == flushed and flushed
