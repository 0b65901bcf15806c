"""Trust at the seams added last (issue 30): the public API misused, odd values, prompts from a
pipe, metric labels, and the spool under pressure. One test per scenario of the issue (its
number in the test's name), each run against the code before the fix and seen failing.

What holds: every value an app or an extractor can carry is masked and encodable by every
exporter; the request's texts are registered when the REQUEST starts; a declared reason wins
over the exception raised after it; metric labels are built per data point and bounded; prompt
figures come from the samples really there, read up to a bound; the spool follows no link,
skips what is not a regular file, survives entries vanishing and counts every loss."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import stat
import struct
import threading
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import cosyvoice_otel
from cosyvoice_otel import masking, urls
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import api, audio_figures, extractors, gradio_bridge, routes
from cosyvoice_otel.instrumentation.metrics import TtsMetrics
from cosyvoice_otel.instrumentation.stage_span import Call
from cosyvoice_otel.sdk import export_base
from cosyvoice_otel.sdk import spool as sp
from cosyvoice_otel.sdk.prometheus import to_families
from cosyvoice_otel.sdk.redaction import MASK, RedactingSpanExporter
from cosyvoice_otel.sdk.spool import Spool
from cosyvoice_otel.sdk.zipkin_http import ResilientZipkinExporter
from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder

from ..support.leaks import encoded_by_every_exporter, found
from ..support.loopback_server import LoopbackServer, QuietHandler
from ..support.scripted_zipkin import CLOSE, ScriptedZipkin
from ..support.tracing import finished_spans, stage_options

TEXT = "please read my secret diary aloud"


@pytest.fixture(autouse=True)
def _clean():
    masking.forget_all()
    api._WARNED.clear()
    yield
    masking.forget_all()
    api._WARNED.clear()
    s.forget_declarations()


class Pipe:
    """provider -> RedactingSpanExporter -> memory: what every exporter would be handed."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.redacting = RedactingSpanExporter(self.memory)
        self.provider = TracerProvider(resource=Resource({"service.name": "seams"}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.redacting))
        self.tracer = self.provider.get_tracer("THIRDPARTY")

    def spans(self):
        return list(self.memory.get_finished_spans())

    def named(self, name: str):
        return [span for span in self.spans() if span.name == name]


@pytest.fixture
def pipe():
    made = Pipe()
    api.activate(made.provider, stage_options())
    yield made
    api.deactivate()


@contextmanager
def request(pipe: Pipe, register: bool = True):
    """A server span, current in the block; the request's text registered as the engine's
    extractors (or the request-start hooks) do."""
    with pipe.tracer.start_as_current_span("POST /tts", kind=SpanKind.SERVER) as span:
        if register:
            masking.remember(span.get_span_context().trace_id, [TEXT])
        yield span


def leaks(spans) -> dict:
    return {name: hits for name, output in encoded_by_every_exporter(spans).items()
            if (hits := found(TEXT, output))}


# -- 1. non-string values are masked too, on every exporter

SHAPES = {
    "bytes": lambda: TEXT.encode(),
    "bytearray": lambda: bytearray(TEXT.encode()),
    "list, a number first": lambda: [1, TEXT],
    "list of bytes": lambda: [TEXT.encode(), b"x"],
    "dict": lambda: {"text": TEXT},
    "dict keyed by the text": lambda: {TEXT: 1},
    "nested": lambda: {"a": [1, {"b": TEXT.encode()}], "n": None},
    "tuple of strings": lambda: (TEXT, "x"),
}


@pytest.mark.parametrize("make", SHAPES.values(), ids=SHAPES.keys())
def test_1_any_shape_of_the_text_is_masked_on_every_exporter(pipe, make) -> None:
    with request(pipe), cosyvoice_otel.stage("rewrite", carried=make()):
        cosyvoice_otel.fail("rewrite_failed", "could not rewrite", figure=make())
    assert leaks(pipe.spans()) == {}
    (span,) = pipe.named("rewrite")
    assert MASK in json.dumps(list(span.attributes.values()), default=str)
    assert MASK in json.dumps(list(span.events[0].attributes.values()), default=str)


def test_1_numbers_booleans_and_clean_sequences_keep_their_types(pipe) -> None:
    values = {"n": 3, "x": 0.5, "nan": float("nan"), "b": True, "ints": (1, 2), "words": ("a", "b")}
    with request(pipe), cosyvoice_otel.stage("typed", **values):
        pass
    (span,) = pipe.named("typed")
    kept = dict(span.attributes)
    assert kept["n"] == 3 and kept["x"] == 0.5 and kept["b"] is True
    assert kept["ints"] == (1, 2) and kept["words"] == ("a", "b") and kept["nan"] != kept["nan"]


# -- 2. a value no exporter can encode is a placeholder, never the batch's failure

def test_2_an_unencodable_figure_fails_no_batch_and_is_counted(pipe, tmp_path) -> None:
    class Opaque:
        __slots__ = ()

    with request(pipe):
        with cosyvoice_otel.stage("odd", thing=Opaque()):
            cosyvoice_otel.fail("odd_failed", "odd", raw=b"\xff\xfe", obj=Opaque())
    for i in range(5):  # five unrelated requests in the same batch
        with pipe.tracer.start_as_current_span(f"other {i}"):
            pass
    batch = pipe.spans()
    payload = ZipkinJsonEncoder().encode(batch)  # no exception
    assert len(json.loads(payload)) == len(batch) == 7
    assert pipe.redacting.counters["placeholders"] == 3  # the bytes, and two objects (None)
    (span,) = pipe.named("odd")
    assert span.attributes["thing"] == "null"  # the SDK made the object None: no exporter
    assert span.events[0].attributes["raw"] == "\ufffd\ufffd"  # agrees on None: text


def test_2_the_encoder_alone_survives_bytes_and_objects_in_events() -> None:
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("raw") as span:
        span.add_event("figures", {"raw": b"\x00\x01", "obj": [object()]})
        span.set_attribute("blob", b"abc")
    (encoded,) = json.loads(ZipkinJsonEncoder().encode(memory.get_finished_spans()))
    assert encoded["tags"]["blob"] == "abc"
    assert json.loads(encoded["annotations"][0]["value"]) == {
        "figures": {"obj": [None], "raw": "\x00\x01"}}


# -- 3. texts are registered when the request starts

def test_3_a_decorated_app_step_failing_before_the_engine_quotes_nothing(pipe) -> None:
    @cosyvoice_otel.stage("dialect_rewrite")
    def rewrite(text: str) -> str:
        raise ValueError(f"cannot rewrite {text!r}")

    with pytest.raises(ValueError), request(pipe, register=False):
        rewrite(TEXT)
    assert pipe.named("dialect_rewrite") and leaks(pipe.spans()) == {}


class _Body:
    def __init__(self, data):
        self.data = data


class _Event:
    def __init__(self, data, ctx):
        self.data = _Body(data)
        setattr(self, gradio_bridge.CTX_ATTR, ctx)


def test_3_a_gradio_events_inputs_are_registered_before_its_handler_runs(pipe) -> None:
    import asyncio

    upload = {"path": "/tmp/gradio/abc/my_voice_of_bob.wav", "orig_name": "my_voice_of_bob.wav",
              "meta": {"_type": "gradio.FileData"}}

    async def process(events):
        with cosyvoice_otel.stage("check_input"):
            raise ValueError(f"bad input {TEXT!r} with {upload['orig_name']}")

    with pipe.tracer.start_as_current_span("POST /gradio_api/queue/join"):
        event = _Event([TEXT, upload, 3], trace.set_span_in_context(trace.get_current_span()))
    wrapper = gradio_bridge.process_events(pipe.tracer, lambda: True)
    with pytest.raises(ValueError):
        asyncio.run(wrapper(process, None, ([event],), {}))
    assert pipe.named("check_input") and leaks(pipe.spans()) == {}
    assert all(not found("my_voice_of_bob", out) for out in
               encoded_by_every_exporter(pipe.spans()).values())


def test_3_fastapis_parsed_values_are_registered_before_the_endpoint_runs(pipe) -> None:
    async def endpoint(**values):
        with cosyvoice_otel.stage("dialect_check"):
            raise ValueError(f"unsupported dialect in {values['tts_text']!r}")

    wrapper = routes.endpoint_values(pipe.tracer, lambda: True)

    async def run_endpoint_function(*, dependant, values, is_coroutine):
        return await endpoint(**values)

    import asyncio

    with pytest.raises(ValueError), request(pipe, register=False):
        asyncio.run(wrapper(run_endpoint_function, None, (),
                            {"dependant": None, "values": {"tts_text": TEXT, "speed": 1.0},
                             "is_coroutine": True}))
    assert pipe.named("dialect_check") and leaks(pipe.spans()) == {}


def test_3_fastapi_end_to_end_in_process(pipe) -> None:
    """The same through a real FastAPI app: the row in the instrumentor's patch table."""
    from fastapi import FastAPI, Form
    from fastapi.testclient import TestClient

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor

    app = FastAPI()

    @app.post("/tts")
    def tts(tts_text: str = Form()) -> dict:
        with cosyvoice_otel.stage("dialect_check"):
            raise ValueError(f"unsupported dialect in {tts_text!r}")

    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=pipe.provider)
    try:
        api.activate(pipe.provider, stage_options())
        client = TestClient(app, raise_server_exceptions=False)
        with pipe.tracer.start_as_current_span("POST /tts", kind=SpanKind.SERVER):
            client.post("/tts", data={"tts_text": TEXT})
    finally:
        inst.uninstrument()
    assert pipe.named("dialect_check") and leaks(pipe.spans()) == {}


# -- 4. a full disk during a timeout's requeue loses nothing uncounted

def _enospc(monkeypatch) -> None:
    real_open = os.open

    def full(path, flags, *args):
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(sp.os, "open", full)


spans_of = finished_spans


def Stub(status: int = 202, close: bool = False) -> ScriptedZipkin:  # noqa: N802
    """Every POST answered ``status``; or (``close``) kept and cut off before an answer."""
    return ScriptedZipkin(lambda n: CLOSE if close else (status, 0.0))


def test_4_a_timed_out_batch_on_a_full_disk_keeps_its_file(tmp_path, monkeypatch) -> None:
    stub = Stub(close=True)  # every answer lost: the batch may be stored, resent once
    try:
        exporter = ResilientZipkinExporter(stub.endpoint, 2, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        exporter.spool.put(exporter.encode(spans_of(4)))
        _enospc(monkeypatch)
        exporter.replay()
        # the resend-once mark could not be written: the file is renamed, nothing lost
        (left,) = exporter.spool.files()
        assert Spool.tries(left) == 1 and exporter.dropped == {}
        exporter._open_until = 0
        exporter.replay()
        assert exporter.dropped == {"timeout": 4} and exporter.spool.files() == []
        assert stub.spans() == 8  # two copies at most
    finally:
        stub.close()


def test_4_parts_the_full_disk_refuses_are_counted_lost(tmp_path, monkeypatch) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.put(b"[1,2]")
    (path,) = spool.files()
    _enospc(monkeypatch)
    assert spool.replace(path, [(b"[1]", 0), (b"[2]", 0)]) == [(b"[1]", 0), (b"[2]", 0)]
    assert spool.files() == []
    assert spool.put(b"[3]") is False and spool.last_failure == "disk_full"


def test_4_a_bisected_part_the_full_disk_refuses_is_counted_disk_full(tmp_path,
                                                                      monkeypatch) -> None:
    # refused; a half taken; one late (margins wide: a busy machine answers "at once" slowly)
    answers = [(400, 0.0), (202, 0.0), (202, 4.0)]
    server = ScriptedZipkin(lambda n: answers[n - 1] if n <= len(answers) else (202, 0.0))
    try:
        exporter = ResilientZipkinExporter(server.endpoint, 1.5, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        exporter.spool.put(exporter.encode(spans_of(4)))
        _enospc(monkeypatch)
        exporter.replay()
        # the late half could not be written back: lost, and counted as such
        assert exporter.counters["sent"] == 2 and exporter.dropped == {"disk_full": 2}
        assert exporter.spool.files() == []
    finally:
        server.close()


def test_4_a_batch_the_full_disk_cannot_spool_is_disk_full_not_spool_cap(
        tmp_path, monkeypatch, refused_endpoint) -> None:
    exporter = ResilientZipkinExporter(refused_endpoint, 2, str(tmp_path), 1 << 20)
    exporter._start_replayer = lambda: None
    _enospc(monkeypatch)
    exporter.export(spans_of(3))
    assert exporter.dropped == {"disk_full": 3}


# -- 5. Prometheus label sets per data point

def _families(record):
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    record(TtsMetrics(meters.get_meter("t")))
    return {f.name: f for f in to_families(reader.get_metrics_data())}


def test_5_each_series_has_its_own_labels_not_the_first_points(monkeypatch) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    counter = meters.get_meter("t").create_counter("tts.requests", unit="{request}")
    counter.add(3, {"cosyvoice.mode": "sft", "cosyvoice.warmup": False})
    counter.add(1, {"cosyvoice.mode": "sft", "cosyvoice.warmup": False, "error.type": "KeyError"})
    counter.add(2, {"tts.stage": "emotion_tagging"})
    (family,) = [f for f in to_families(reader.get_metrics_data()) if f.name == "tts_requests"]
    samples = {tuple(sorted(sample.labels.items())): sample.value
               for sample in family.samples if sample.name.endswith("_total")}
    assert samples == {
        (("cosyvoice_mode", "sft"), ("cosyvoice_warmup", "false"), ("error_type", ""),
         ("tts_stage", "")): 3,
        (("cosyvoice_mode", "sft"), ("cosyvoice_warmup", "false"), ("error_type", "KeyError"),
         ("tts_stage", "")): 1,
        (("cosyvoice_mode", ""), ("cosyvoice_warmup", ""), ("error_type", ""),
         ("tts_stage", "emotion_tagging")): 2}


# -- 6. undeclared reasons: 'undeclared' in the metrics, masked on the spans

def test_6_an_undeclared_reason_is_one_metric_label_and_masked_on_spans(pipe) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    api.activate(pipe.provider, stage_options(metrics=TtsMetrics(meters.get_meter("t"))))
    secret = "hunter_two_secret"
    for i in range(30):
        with request(pipe) as req:
            masking.remember(req.get_span_context().trace_id, [secret])
            with cosyvoice_otel.stage("check"):
                cosyvoice_otel.fail(secret if i == 0 else f"reason_{i}", "failed")
    stage_series = [f for f in to_families(reader.get_metrics_data())
                    if f.name == "tts_stage_duration_seconds"][0]
    reasons = {sample.labels["error_type"] for sample in stage_series.samples}
    assert reasons == {s.UNDECLARED}
    first = [span for span in pipe.spans() if span.name in ("check", "POST /tts")][:2]
    assert {span.attributes[s.ERROR_TYPE] for span in first} == {MASK}
    assert all(not found(secret, out) for out in encoded_by_every_exporter(first).values())


def test_6_declared_listed_and_exception_reasons_keep_their_label() -> None:
    s.declare_reason("asr_empty_result_x")
    assert [s.metric_reason(r) for r in ("asr_empty_result_x", "text_too_long", "KeyError",
                                         "some_words", None)] == [
        "asr_empty_result_x", "text_too_long", "KeyError", s.UNDECLARED, None]


# -- 7. a prompt's duration from its samples, not a streaming header

def wav_bytes(seconds: float, rate: int = 16000, loud_after: float | None = None) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    if loud_after is not None:
        x[: int(loud_after * rate)] = 0.0
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def piped(data: bytes) -> bytes:
    """As ``ffmpeg ... -f wav -`` writes it: both size fields 0xFFFFFFFF."""
    data = bytearray(data)
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[data.index(b"data") + 4: data.index(b"data") + 8] = struct.pack("<I", 0xFFFFFFFF)
    return bytes(data)


def test_7_a_wav_from_a_pipe_has_its_real_duration_and_no_false_limit(tmp_path) -> None:
    path = tmp_path / "piped.wav"
    path.write_bytes(piped(wav_bytes(2.0)))
    assert extractors.describe_audio(path)[s.PROMPT_SECONDS] == 2.0
    assert extractors.describe_audio(io.BytesIO(path.read_bytes()))[s.PROMPT_SECONDS] == 2.0
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    from opentelemetry import context

    from cosyvoice_otel.instrumentation.stage_span import StageSpan

    stage = StageSpan(provider.get_tracer("t"), "audio_preprocess.speech_feat",
                      context.get_current(), None, {}, stage_options(max_prompt_seconds=15.0))
    extractors.Audio().start(stage, Call(None, (str(path),), {}, {}))
    stage.end()
    (span,) = memory.get_finished_spans()
    assert span.status.status_code is StatusCode.UNSET and s.ERROR_TYPE not in span.attributes
    assert span.attributes[s.AUDIO_RMS_DBFS] > -20  # figures from the samples read


# -- 8, 9, 12. the spool: no link followed, entries vanishing, FIFOs

def test_8_a_planted_symlink_for_the_spool_folder_is_refused_not_followed(tmp_path) -> None:
    target = tmp_path / "victim"
    target.mkdir(mode=0o755)
    link = tmp_path / "spool-root" / "abc"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(OSError):
        Spool(link, 1 << 20)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755 and list(target.iterdir()) == []


def test_8_the_exporter_with_a_planted_link_warns_and_writes_nothing(tmp_path, caplog,
                                                                    refused_endpoint) -> None:
    import hashlib

    target = tmp_path / "victim"
    target.mkdir(mode=0o755)
    root = tmp_path / "root"
    root.mkdir()
    (root / hashlib.sha1(refused_endpoint.encode()).hexdigest()[:12]).symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter = ResilientZipkinExporter(refused_endpoint, 2, str(root), 1 << 20)
    assert exporter.spool is None and "unusable" in caplog.text
    exporter.export(spans_of(2))
    assert list(target.iterdir()) == [] and exporter.dropped == {"spool_cap": 2}


def test_8_an_existing_0755_spool_folder_becomes_0700(tmp_path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o755)
    Spool(folder, 1 << 20)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_9_a_dangling_link_or_a_vanished_entry_leaves_the_spool_usable(tmp_path,
                                                                      monkeypatch) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder, 1 << 20)
    spool.put(b"[1]")
    (folder / "5-1-1.json").symlink_to(tmp_path / "nowhere")
    real_scandir = os.scandir

    class Vanishing:
        """The listing names a file another replica removes before its stat."""

        def __init__(self, path):
            self.inner = real_scandir(path)

        def __enter__(self):
            entries = list(self.inner)
            for entry in entries:
                if entry.name.endswith(".json") and not entry.is_symlink():
                    os.unlink(entry.path)
            return iter(entries)

        def __exit__(self, *exc):
            self.inner.close()

    again = Spool(folder, 1 << 20)  # a second process starting with a dangling link there
    assert again.size == 3 and [p.name for p in again.files()] != []
    monkeypatch.setattr(sp.os, "scandir", Vanishing)
    assert Spool(folder, 1 << 20).size == 0  # vanished between listing and stat: no error


def test_12_a_fifo_named_like_a_batch_never_blocks_replay(tmp_path) -> None:
    stub = Stub()
    try:
        exporter = ResilientZipkinExporter(stub.endpoint, 2, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        os.mkfifo(exporter.spool.directory / "1-1-000001.json")
        exporter.spool.put(exporter.encode(spans_of(2)))
        done = threading.Event()
        worker = threading.Thread(target=lambda: (exporter.replay(), done.set()), daemon=True)
        worker.start()
        worker.join(30)  # a FIFO opened for reading waits for a writer: forever
        assert done.is_set() and stub.spans() == 2
        assert exporter.spool.files() == []  # the FIFO is no batch
    finally:
        stub.close()


# -- 10. Zipkin stores, then closes before the status line: at most two copies

def test_10_a_batch_stored_then_cut_off_is_sent_at_most_twice(tmp_path) -> None:
    stub = Stub(close=True)
    try:
        exporter = ResilientZipkinExporter(stub.endpoint, 2, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        exporter.export(spans_of(5))
        for _ in range(4):
            exporter._open_until = 0
            exporter.replay()
        assert stub.spans() == 10  # stored twice at most, then given up, counted
        assert exporter.dropped == {"timeout": 5} and exporter.spool.files() == []
    finally:
        stub.close()


def test_10_a_refused_connection_is_away_not_uncertain(tmp_path, refused_endpoint) -> None:
    exporter = ResilientZipkinExporter(refused_endpoint, 2, str(tmp_path), 1 << 20)
    assert exporter._post(b"[]").outcome == "away"


# -- 11. a batch over the spool's read bound is kept in parts

def test_11_a_huge_batch_is_spooled_in_parts_each_readable(tmp_path, monkeypatch,
                                                          refused_endpoint) -> None:
    monkeypatch.setattr(export_base, "MAX_FILE_BYTES", 4000)
    monkeypatch.setattr(sp, "MAX_FILE_BYTES", 4000)
    exporter = ResilientZipkinExporter(refused_endpoint, 2, str(tmp_path), 1 << 20)
    exporter._start_replayer = lambda: None
    exporter.export(spans_of(12, size=1000) + spans_of(1, size=5000))
    files = exporter.spool.files()
    assert len(files) > 1 and all(f.stat().st_size <= 4000 for f in files)
    assert sum(exporter.spool.count_spans(f) for f in files) == 12
    assert exporter.dropped == {"too_large": 1}  # one span over the bound alone
    for f in files:
        exporter.spool.read(f)  # every part reads back


# -- 13. credentials in the endpoint are never printed

def test_13_user_info_is_shown_as_stars() -> None:
    assert urls.shown("http://bob:hunter2@zipkin:9411/api/v2/spans") == \
        "http://***@zipkin:9411/api/v2/spans"
    assert urls.shown("http://bob@zipkin:9411/x?a=b") == "http://***@zipkin:9411/x?a=b"
    assert urls.shown("http://zipkin:9411/a@b") == "http://zipkin:9411/a@b"
    assert urls.shown(None) is None
    plain, auth = urls.split_credentials("http://bob:hunter%32@zipkin:9411/api")
    assert plain == "http://zipkin:9411/api" and auth == "Basic Ym9iOmh1bnRlcjI="


def test_13_the_away_line_hides_the_password(tmp_path, caplog) -> None:
    port = _free_port()
    endpoint = f"http://bob:hunter2@127.0.0.1:{port}/api/v2/spans"
    exporter = ResilientZipkinExporter(endpoint, 1, str(tmp_path), 1 << 20)
    exporter._start_replayer = lambda: None
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.export(spans_of(1))
    assert "not taking spans" in caplog.text and "hunter2" not in caplog.text
    assert "***@127.0.0.1" in caplog.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_13_debug_lines_hide_the_password(process_settings) -> None:
    settings = process_settings({
        "COSYVOICE_TRACED_ZIPKIN_ENDPOINT": "http://bob:hunter2@zipkin:9411/api/v2/spans"})
    text = "\n".join(settings.describe())
    assert "hunter2" not in text and "http://***@zipkin:9411/api/v2/spans" in text


def test_13_doctor_reaches_a_zipkin_behind_basic_auth_and_prints_no_password() -> None:
    from cosyvoice_otel.tools.doctor import check_zipkin

    seen = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            body = b'{"zipkin": {"version": "3.5.1"}}'
            self.reply(200 if self.headers.get("Authorization") else 401, body)

    server = LoopbackServer(Handler, "")
    try:
        base = server.endpoint.replace("http://", "http://bob:hunter2@")
        lines = list(check_zipkin(base))
    finally:
        server.close()
    assert seen and set(seen) == {"Basic Ym9iOmh1bnRlcjI="}  # every request (clock probes too)
    assert lines[0].level == "ok" and "3.5.1" in lines[0].detail
    assert all("hunter2" not in line.detail for line in lines)


def test_13_doctor_on_a_dead_endpoint_prints_no_password() -> None:
    from cosyvoice_otel.tools.doctor import check_zipkin

    (line,) = list(check_zipkin(f"http://bob:hunter2@127.0.0.1:{_free_port()}"))
    assert line.level == "fail" and "hunter2" not in line.detail and "***@" in line.detail


# -- 14. a thousand nested stages format the stack once

def test_14_nested_stages_record_the_full_stack_trace_once(pipe) -> None:
    depth = 60

    def nest(level: int) -> None:
        with cosyvoice_otel.stage(f"level_{level}"):
            if level == depth:
                raise RecursionError("deep")
            nest(level + 1)

    with pytest.raises(RecursionError), request(pipe):
        nest(1)
    events = [event for span in pipe.spans() if span.name.startswith("level_")
              for event in span.events if event.name == "exception"]
    assert len(events) == depth
    full = [e for e in events if "Traceback" in e.attributes["exception.stacktrace"]]
    (inner,) = pipe.named(f"level_{depth}")
    assert len(full) == 1 and full[0] is inner.events[0]
    assert all(e.attributes["exception.type"] == "RecursionError" for e in events)


# -- 15. one stage object entered by several threads, nested

def test_15_one_stage_object_in_four_threads_and_nested_ends_every_span(pipe) -> None:
    shared = cosyvoice_otel.stage("shared_step")
    barrier = threading.Barrier(4)
    parent = trace.set_span_in_context(trace.get_current_span())

    def work(nested: bool) -> None:

        with pipe.tracer.start_as_current_span("worker request", context=parent):
            with shared:
                barrier.wait()
                if nested:
                    with shared:
                        pass

    threads = [threading.Thread(target=work, args=(i < 2,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = pipe.named("shared_step")
    assert len(spans) == 6  # 4 entries, 2 of them nested: every one ended
    workers = {span.context.span_id: span for span in pipe.named("worker request")}
    nested = [sp_ for sp_ in spans if sp_.parent.span_id not in workers]
    assert len(nested) == 2 and all(
        any(o.context.span_id == n.parent.span_id for o in spans) for n in nested)
    assert shared._open == []


def test_15_one_stage_object_in_two_interleaved_tasks_closes_each_its_own(pipe) -> None:
    import asyncio

    shared = cosyvoice_otel.stage("shared_step")

    async def main() -> list[bool]:
        b_entered, a_done = asyncio.Event(), asyncio.Event()
        ended = []

        async def first() -> None:  # enters first, exits first (while the second is inside)
            with shared as mine:
                await b_entered.wait()
            ended.append(mine.ended)
            a_done.set()

        async def second() -> None:
            with shared as mine:
                b_entered.set()
                await a_done.wait()
                ended.append(mine.ended)  # still open: the first task's exit was not ours
            ended.append(mine.ended)

        await asyncio.gather(first(), second())
        return ended

    with request(pipe):
        assert asyncio.run(main()) == [True, False, True]
    assert len(pipe.named("shared_step")) == 2 and shared._open == []


# -- 16, 17. bounded warnings and declarations

def test_16_invalid_dynamic_names_warn_a_bounded_number_of_times_without_the_text(
        pipe, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"), request(pipe):
        for i in range(500):
            with cosyvoice_otel.stage(f"Stage for {TEXT} #{i}"):
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "cosyvoice_otel"]
    assert len(lines) == api.MAX_WARNED + 1 and len(api._WARNED) == api.MAX_WARNED + 1
    assert "no more are logged" in lines[-1]
    assert all(not found(TEXT, line) for line in lines)
    assert pipe.named(f"Stage for {TEXT} #0") == []


def test_17_declarations_are_bounded(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        for i in range(s.MAX_DECLARED + 50):
            cosyvoice_otel.declare_stage(f"step_{i}")
            cosyvoice_otel.declare_reason(f"reason_{i}")
    assert len([d for d in s.all_spans() if d.name.startswith("step_")]) == s.MAX_DECLARED
    assert s.known_reason("reason_0") and not s.known_reason(f"reason_{s.MAX_DECLARED}")
    assert len([r for r in caplog.records if "declared; the rest" in r.getMessage()]) == 2


# -- 18, 19. NaN prompts, a 200 MB prompt

def test_18_nan_and_inf_samples_give_finite_figures() -> None:
    x = np.full(16000, 0.25, dtype=np.float32)
    x[::100] = np.nan
    x[5] = np.inf
    figures = audio_figures.figures(x, 16000, "tensor/float32")
    assert figures[s.AUDIO_RMS_DBFS] == pytest.approx(-12.04, abs=0.01)
    assert figures[s.AUDIO_PEAK_DBFS] == pytest.approx(-12.04, abs=0.01)
    assert all(np.isfinite(v) for k, v in figures.items() if k != s.AUDIO_FORMAT)


def test_19_a_long_prompt_is_read_only_up_to_its_bound(tmp_path, monkeypatch) -> None:
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(40.0, rate=8000, loud_after=31.0))  # silent, then loud
    asked = []
    real = wave.Wave_read.readframes
    monkeypatch.setattr(wave.Wave_read, "readframes",
                        lambda self, n: asked.append(n) or real(self, n))
    figures = audio_figures.measure(str(path))
    assert asked == [30 * 8000]  # never the whole file
    assert figures[s.AUDIO_RMS_DBFS] == -120.0  # the loud part past 30 s was not read
    asked.clear()
    audio_figures.measure(str(path), 15.0)
    assert asked == [15 * 8000]


# -- 20. fail(reason) then raise: the declared reason wins

def test_20_a_declared_reason_then_a_raise_keeps_the_reason(pipe) -> None:
    cosyvoice_otel.declare_reason("invalid_input_duration_x")
    with pytest.raises(ValueError), request(pipe):
        with cosyvoice_otel.stage("outer_check"), cosyvoice_otel.stage("check_prompt"):
            cosyvoice_otel.fail("invalid_input_duration_x", "prompt too long", seconds=31.0)
            raise ValueError("prompt too long")
    for name in ("check_prompt", "outer_check", "POST /tts"):
        (span,) = pipe.named(name)
        assert span.attributes[s.ERROR_TYPE] == "invalid_input_duration_x", name
        assert span.status.status_code is StatusCode.ERROR
    (inner,) = pipe.named("check_prompt")
    assert [e.name for e in inner.events] == ["prompt too long", "exception"]
    assert inner.events[1].attributes["exception.type"] == "ValueError"


def test_20_without_a_declared_reason_the_exceptions_type_is_the_reason(pipe) -> None:
    with pytest.raises(KeyError), request(pipe), cosyvoice_otel.stage("lookup_step"):
        raise KeyError("x")
    (span,) = pipe.named("lookup_step")
    assert span.attributes[s.ERROR_TYPE] == "KeyError"


def test_13_the_launchers_startup_warning_hides_the_password(capsys) -> None:
    from cosyvoice_otel.launcher.launcher import _probe

    _probe(f"http://bob:hunter2@127.0.0.1:{_free_port()}/api/v2/spans", 2.0)
    err = capsys.readouterr().err
    assert "did not answer" in err and "hunter2" not in err and "http://***@127.0.0.1:" in err


# -- issue 36 item 2: replicas sharing one spool deliver each batch once

def test_two_replicas_sharing_a_spool_never_send_one_batch_twice(tmp_path) -> None:
    """Replica A is in the middle of sending the oldest batch when replica B replays: B
    passes over the batch A holds and sends the rest; every span arrives once."""
    first_seen, go_on = threading.Event(), threading.Event()
    bodies: list[bytes] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            bodies.append(body)
            if len(bodies) == 1:
                first_seen.set()
                go_on.wait(30)  # A's batch is in flight until B has replayed
            self.reply(202)

    server = LoopbackServer(Handler, "/api/v2/spans")
    try:
        a, b = (ResilientZipkinExporter(server.endpoint, 30, str(tmp_path), 1 << 20)
                for _ in range(2))
        assert a.spool.directory == b.spool.directory  # one folder, as on one host
        for exporter in (a, b):
            exporter._start_replayer = lambda: None
        for i in range(3):  # what both spooled during an outage
            (a if i % 2 else b).spool.put(a.encode(spans_of(2)))
        worker = threading.Thread(target=a.replay)
        worker.start()
        assert first_seen.wait(30)
        b.replay()  # A holds the oldest: B sends the other two
        go_on.set()
        worker.join(30)
        ids = [span["id"] for body in bodies for span in json.loads(body)]
        assert len(ids) == 6 and len(set(ids)) == 6  # every span once
        assert a.counters["replayed"] + b.counters["replayed"] == 6
        assert b.counters["replayed"] == 4 and a.spool.files() == []
    finally:
        go_on.set()
        server.close()


def test_a_claim_is_refused_while_held_and_on_a_file_made_anew(tmp_path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.put(b"[1]")
    (path,) = spool.files()
    held = spool.claim(path)
    assert held is not None and spool.claim(path) is None  # held by another: no wait
    spool.release(held)
    again = spool.claim(path)
    assert again is not None
    spool.release(again)
    real_flock = sp.fcntl.flock

    def meanwhile(fd, op):  # between our open and our lock, another replica sent the batch
        path.unlink()  # and removed it; a new batch took the same name
        path.write_bytes(b"[2]")
        return real_flock(fd, op)

    import types

    sp_fcntl = sp.fcntl
    sp.fcntl = types.SimpleNamespace(flock=meanwhile, LOCK_EX=sp_fcntl.LOCK_EX,
                                     LOCK_NB=sp_fcntl.LOCK_NB)
    try:
        assert spool.claim(path) is None  # the inode we locked is no longer the file
    finally:
        sp.fcntl = sp_fcntl
    assert spool.claim(tmp_path / "spool" / "gone.json") is None


def test_a_batch_is_marked_in_flight_while_sent_and_a_crashed_senders_resend_counts(
        tmp_path, refused_endpoint) -> None:
    """A sender that dies mid-send leaves its batch marked ``.s``: it may be stored, so the
    replica that sends it next counts a possible duplicate (and the resend bound holds)."""
    names_during_post: list[list[str]] = []
    folder: list[Path] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            names_during_post.append(sorted(p.name for p in folder[0].iterdir()))
            self.reply(202)

    server = LoopbackServer(Handler, "/api/v2/spans")
    try:
        exporter = ResilientZipkinExporter(server.endpoint, 5, str(tmp_path), 1 << 20)
        exporter._start_replayer = lambda: None
        folder.append(exporter.spool.directory)
        exporter.spool.put(exporter.encode(spans_of(2)))
        exporter.replay()
        assert [n.endswith(".s.json") for n in names_during_post[0]] == [True]
        assert exporter.counters["maybe_duplicated"] == 0 and exporter.spool.files() == []
        # what a sender that died mid-send leaves behind
        exporter.spool.put(exporter.encode(spans_of(3)))
        (path,) = exporter.spool.files()
        path.rename(path.with_name(path.name[:-5] + ".s.json"))
        exporter.replay()
        assert exporter.counters["maybe_duplicated"] == 3 and exporter.spool.files() == []
    finally:
        server.close()
    # Zipkin away: the mark comes off, the possible copy is remembered as a try
    away = ResilientZipkinExporter(refused_endpoint, 5, str(tmp_path / "other"), 1 << 20)
    away._start_replayer = lambda: None
    away.spool.put(away.encode(spans_of(1)))
    (path,) = away.spool.files()
    path.rename(path.with_name(path.name[:-5] + ".s.json"))
    away.replay()
    (left,) = away.spool.files()
    assert not Spool.in_flight(left) and Spool.tries(left) == 1


def test_an_output_file_named_after_the_request_text_is_masked(pipe, tmp_path) -> None:
    """An app that names its WAV after the text: the base name the writer row records is the
    request's own text, masked like any value on every exporter."""
    import wave

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor

    inst = CosyVoiceInstrumentor()
    inst.instrument(tracer_provider=pipe.provider)
    try:
        with request(pipe):
            with wave.open(str(tmp_path / f"{TEXT}.wav"), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(16000)
                out.writeframes(b"\0\1" * 50)
    finally:
        inst.uninstrument()
    (server,) = pipe.named("POST /tts")
    assert s.OUTPUT_FILE_DIGEST in server.attributes  # the writer row did record the file
    assert TEXT not in str(server.attributes[s.OUTPUT_FILE])
    assert leaks(pipe.spans()) == {}
