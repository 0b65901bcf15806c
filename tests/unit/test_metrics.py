"""Metrics from every request (issue 11), in one process: the demo engine traced with the SDK's
in-memory span exporter and metric reader, at sampling rates 0 and 1."""

from __future__ import annotations

import logging
import socket

import pytest
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from cosyvoice_otel import errors
from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
from cosyvoice_otel.instrumentation.metrics import SECONDS_BUCKETS
from cosyvoice_otel.sdk.export_base import CountingExporter
from cosyvoice_otel.sdk.health import QueueDrops, TracerHealth, count_queue_drops
from cosyvoice_otel.sdk.meter import PRIVACY_VIEWS
from cosyvoice_otel.sdk.prometheus import PrometheusExemplarReader, metric_name, to_families
from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler
from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

TEXT = "Metrics never carry this sentence. 你好，世界！"
# every label our instruments may carry (the schema's table): bounded by construction
ALLOWED_LABELS = {label for m in s.METRICS for label in m.labels}


@pytest.fixture(scope="module")
def model(make_model):
    ThreadingInstrumentor().instrument()  # the LLM thread's spans join the request's trace
    from cosyvoice.cli.cosyvoice import AutoModel

    yield AutoModel(model_dir=str(make_model(3)))
    ThreadingInstrumentor().uninstrument()


class Rig:
    def __init__(self, rate: float, **instrument_kwargs) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(sampler=DeferAwareRatioSampler(rate,
                                                                             record_all=True))
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader],
                                            resource=Resource({"service.name": "t"}))
        self.inst = CosyVoiceInstrumentor()
        self.inst.instrument(tracer_provider=self.tracer_provider,
                             meter_provider=self.meter_provider, **instrument_kwargs)

    def request(self, model, stream: bool = False, speaker: str = "中文女") -> None:
        tracer = self.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request"):
            list(model.inference_sft(TEXT, speaker, stream=stream))

    def points(self, name: str) -> list:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing was ever recorded
            return []
        return [point for rm in data.resource_metrics for sm in rm.scope_metrics
                for metric in sm.metrics if metric.name == name
                for point in metric.data.data_points]

    def close(self) -> None:
        self.inst.uninstrument()
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def rig():
    made: list[Rig] = []

    def _make(rate: float, **kwargs) -> Rig:
        made.append(Rig(rate, **kwargs))
        return made[-1]

    yield _make
    for item in made:
        item.close()


def _warm(model) -> None:
    """The engine's first request is its warm-up (cosyvoice.warmup=true); run it untraced."""
    list(model.inference_sft("warm up", "中文女"))


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_every_request_is_counted_whatever_the_sampling(model, rig, rate) -> None:
    _warm(model)
    r = rig(rate, metrics="prometheus")
    for stream in (False, True, False):
        r.request(model, stream)
    durations = r.points(s.REQUEST_DURATION)
    assert sum(p.count for p in durations) == 3
    assert {p.attributes[s.STREAM] for p in durations} == {True, False}
    assert all(p.attributes[s.MODE] == "sft" for p in durations)
    requests = r.points(s.REQUESTS)
    assert sum(p.value for p in requests) == 3
    stages: dict[str, int] = {}
    for point in r.points(s.STAGE_DURATION):
        stages[point.attributes[s.STAGE]] = stages.get(point.attributes[s.STAGE], 0) + point.count
    assert stages[s.INFERENCE] == 3  # and two sentences each: model.tts runs twice per request
    assert stages[s.ACOUSTIC_MODEL] == stages[s.MODEL_TTS] == 6 and stages[s.VOCODER] >= 6
    assert sum(p.count for p in r.points(s.TIME_TO_FIRST_AUDIO)) == 3
    assert sum(p.count for p in r.points(s.RTF_METRIC)) == 3
    assert sum(p.count for p in r.points(s.LLM_TOKEN_RATE)) == 6
    exported = r.spans.get_finished_spans()
    exemplars = [e for p in durations for e in p.exemplars]
    if rate == 0.0:  # measured, but nothing leaves the process and nothing links to a trace
        assert exported == () and exemplars == []
    else:  # each exemplar names a request span that was exported
        assert exemplars
        inference = {(sp.context.trace_id, sp.context.span_id) for sp in exported
                     if sp.name == s.INFERENCE}
        assert {(e.trace_id, e.span_id) for e in exemplars} <= inference


def test_labels_are_bounded_and_never_content(model, rig) -> None:
    r = rig(1.0, metrics="otlp")
    r.request(model)
    with pytest.raises(KeyError):
        r.request(model, speaker="no-such-speaker")
    data = r.reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    assert set(point.attributes) <= ALLOWED_LABELS, metric.name
                    for value in point.attributes.values():
                        assert not (isinstance(value, str) and ("Metrics" in value
                                                                or "你好" in value))
    errors = r.points(s.ERRORS)
    assert [(p.attributes[s.ERROR_TYPE], p.value) for p in errors] == [("KeyError", 1)]
    failed = [p for p in r.points(s.REQUESTS) if p.attributes.get(s.ERROR_TYPE) == "KeyError"]
    assert sum(p.value for p in failed) == 1


def test_histograms_use_tts_buckets(model, rig) -> None:
    r = rig(1.0, metrics="prometheus")
    r.request(model)
    point = r.points(s.REQUEST_DURATION)[0]
    assert isinstance(point, HistogramDataPoint)
    assert tuple(point.explicit_bounds) == SECONDS_BUCKETS


def test_metrics_off_records_nothing(model, rig) -> None:
    r = rig(1.0, metrics="none")
    r.request(model)
    assert r.points(s.REQUEST_DURATION) == []
    assert r.spans.get_finished_spans()  # tracing itself is unchanged


def test_a_broken_recorder_is_counted_and_the_request_goes_on(model, rig, monkeypatch) -> None:
    from cosyvoice_otel.instrumentation.metrics import TtsMetrics

    def broken(self, stage):
        raise RuntimeError("metrics bug")

    monkeypatch.setattr(TtsMetrics, "stage_ended", broken)
    before = errors.ERRORS["metrics"]
    r = rig(1.0, metrics="prometheus")
    r.request(model)
    assert errors.ERRORS["metrics"] > before
    assert s.VOCODER in {sp.name for sp in r.spans.get_finished_spans()}


# ------------------------------------------------------------------ /metrics (prometheus_client)

def _families_with_exemplar():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "svc"}),
                             views=PRIVACY_VIEWS)
    tracer_provider = TracerProvider()
    meter = provider.get_meter("t")
    hist = meter.create_histogram(s.REQUEST_DURATION, unit="s",
                                  explicit_bucket_boundaries_advisory=[0.1, 1.0])
    counter = meter.create_counter(s.REQUESTS, unit="{request}")
    http = meter.create_histogram("http.server.duration", unit="ms")
    with tracer_provider.get_tracer("t").start_as_current_span("r") as span:
        hist.record(0.5, {s.MODE: "sft", s.STREAM: False})
    counter.add(2, {s.MODE: "sft"})
    http.record(12, {"http.method": "GET", "http.target": "/file=/tmp/alice-secret.wav",
                     "http.host": "evil.example", "http.status_code": 200})
    return to_families(reader.get_metrics_data()), span.get_span_context()


def test_openmetrics_output_carries_the_trace_id_as_exemplar() -> None:
    families, ctx = _families_with_exemplar()

    class Registry:
        def collect(self):
            return families

    text = generate_openmetrics(Registry()).decode()
    bucket = next(line for line in text.splitlines()
                  if line.startswith('tts_request_duration_seconds_bucket{') and 'le="1.0"' in line)
    assert f'# {{span_id="{ctx.span_id:016x}",trace_id="{ctx.trace_id:032x}"}} 0.5' in bucket
    assert 'cosyvoice_mode="sft",cosyvoice_stream="false"' in bucket
    assert "tts_requests_total{cosyvoice_mode=\"sft\"} 2.0" in text
    assert 'target_info{service_name="svc"' in text
    # the plain text format (what a scraper without OpenMetrics gets) has no exemplars
    assert "trace_id" not in generate_latest(Registry()).decode()


def test_stock_http_metrics_lose_private_and_unbounded_attributes() -> None:
    families, _ = _families_with_exemplar()
    http = next(f for f in families if f.name == "http_server_duration_milliseconds")
    labels = {key for sample in http.samples for key in sample.labels}
    assert labels == {"http_method", "http_status_code", "le"}


@pytest.mark.parametrize(("name", "unit", "expected"), [
    ("tts.request.duration", "s", "tts_request_duration_seconds"),
    ("tts.rtf", "1", "tts_rtf"),
    ("cosyvoice_otel.spool.size", "By", "cosyvoice_otel_spool_size_bytes"),
    ("tts.requests", "{request}", "tts_requests"),
    ("x.seconds", "s", "x_seconds"),
    ("a-b", "ms", "a_b_milliseconds"),
    ("queue", "kB/s", "queue_kB_s")])  # a unit without a table entry: sanitized as is
def test_prometheus_names(name, unit, expected) -> None:
    assert metric_name(name, unit) == expected


def test_the_readers_defaults_are_the_option_tables() -> None:
    import inspect

    from cosyvoice_otel.settings import OPTIONS_BY_NAME

    params = inspect.signature(PrometheusExemplarReader).parameters
    assert params["host"].default == OPTIONS_BY_NAME["metrics_host"].default
    assert params["port"].default == OPTIONS_BY_NAME["metrics_port"].default


def test_schema_names_match_the_exposition() -> None:
    for m in s.METRICS:
        name = metric_name(m.name, m.unit)
        assert m.prometheus in (name, name + "_total"), m.name


def test_a_busy_port_is_one_warning_and_no_failure(caplog) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
            reader = PrometheusExemplarReader("127.0.0.1", port)
            provider = MeterProvider(metric_readers=[reader])
    warnings = [r for r in caplog.records if "metrics port" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()
    assert reader.server is None
    provider.get_meter("t").create_counter("c").add(1)
    assert reader.scrape() is not None  # collecting still works
    provider.shutdown()


def test_the_reader_serves_metrics_over_http() -> None:
    import requests

    reader = PrometheusExemplarReader("127.0.0.1", 0)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter(s.REQUESTS, unit="{request}").add(3)
    host, port = reader.server.server_address[:2]
    assert host == "127.0.0.1"  # the asked address, not all interfaces
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                        headers={"Accept": "application/openmetrics-text"}).text
    assert "tts_requests_total 3.0" in text and text.rstrip().endswith("# EOF")
    provider.shutdown()
    assert reader.server is None


# ------------------------------------------------------------------------- the tracer's health

class FakeZipkin(CountingExporter):
    """One of our exporters (the counting base), with chosen counts."""

    def __init__(self, dropped: dict | None = None, **counters) -> None:
        self._init_counting()
        self.counters.update(counters)
        self.dropped.update(dropped or {})
        self.spool = type("Spool", (), {"size": 4096})()


class FakeOther:
    def __init__(self, result) -> None:
        self.result = result

    def export(self, spans):
        return self.result


def test_health_totals_add_up_by_reason() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    lost = {"spool_cap": 6, "export_error": 1, "rejected": 2, "too_large": 3, "timeout": 4,
            "spool_unreadable": 5}
    zipkin = RedactingSpanExporter(FakeZipkin(lost, sent=10, spooled=4, replayed=3,
                                              failures=5))
    other = RedactingSpanExporter(FakeOther(SpanExportResult.FAILURE))
    other.export(_two_spans())
    other.export(_two_spans())
    other.counters["redaction_failed"] = 5
    ok = RedactingSpanExporter(FakeOther(SpanExportResult.SUCCESS))
    ok.export(_two_spans())
    queue = QueueDrops()
    queue.drop_items(4)
    queue.drop_items(2)
    keeper = type("Keeper", (), {"counters": {"evicted": 8, "dropped": 1}})()
    # a second Zipkin exporter (a keep-errors copy or another endpoint): everything adds up
    second = RedactingSpanExporter(FakeZipkin({k: 10 * v for k, v in lost.items()}, sent=100,
                                              spooled=40, replayed=30, failures=50))
    from cosyvoice_otel.errors import ERRORS

    totals = TracerHealth([zipkin, other, ok, second], [queue], [keeper]).totals()
    assert totals["exported"] == 10 + 2 + 100
    assert (totals["spooled"], totals["replayed"]) == (44, 33)
    assert totals["spool_bytes"] == 2 * 4096
    assert totals["failures"] == 5 + 2 + 50
    assert totals["dropped.spool_cap"] == 6 + 60
    assert totals["dropped.export_error"] == 1 + 4 + 5 + 10  # Zipkin's, other's, redaction
    assert totals["dropped.rejected"] == 22 and totals["dropped.queue_full"] == 6
    assert (totals["dropped.too_large"], totals["dropped.timeout"],
            totals["dropped.spool_unreadable"]) == (33, 44, 55)
    assert totals["dropped.keep_errors_evicted"] == 9
    assert totals["tracing_errors"] == sum(ERRORS.values())


def _two_spans() -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for name in ("a", "b"):
        provider.get_tracer("t").start_span(name).end()
    return list(memory.get_finished_spans())


def test_no_spool_means_no_spool_bytes() -> None:
    zipkin = FakeZipkin(sent=1)
    zipkin.spool = None
    assert TracerHealth([RedactingSpanExporter(zipkin)]).totals()["spool_bytes"] == 0


def test_queue_drops_pass_every_call_on() -> None:
    calls = []

    class Previous:
        def drop_items(self, count, error_type="queue_full"):
            calls.append(("drop", count, error_type))

        def finish_items(self, count):
            calls.append(("finish", count))

    drops = QueueDrops(Previous())
    drops.drop_items(3, "already_shutdown")
    drops.drop_items(2)
    drops.finish_items(7)
    assert drops.dropped == 5
    assert calls == [("drop", 3, "already_shutdown"), ("drop", 2, "queue_full"),
                     ("finish", 7)]
    QueueDrops().finish_items(1)  # without a previous hook: nothing to pass on
    assert count_queue_drops(object()) is None
    assert count_queue_drops(type("P", (), {"_batch_processor": object()})()) is None


def test_health_instruments_report_the_totals() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    zipkin = RedactingSpanExporter(FakeZipkin({"spool_cap": 2}, sent=3, spooled=11, replayed=7,
                                              failures=5))
    TracerHealth([zipkin]).register(provider.get_meter("h"))
    from cosyvoice_otel.errors import ERRORS
    values = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    values[(metric.name, point.attributes.get(s.DROP_REASON))] = point.value
    assert values[(s.SPANS_EXPORTED, None)] == 3
    assert values[(s.SPANS_SPOOLED, None)] == 11 and values[(s.SPANS_REPLAYED, None)] == 7
    assert values[(s.EXPORT_FAILURES, None)] == 5
    assert values[(s.TRACING_ERRORS, None)] == sum(ERRORS.values())
    assert values[(s.SPANS_DROPPED, "spool_cap")] == 2
    assert values[(s.SPOOL_SIZE, None)] == 4096
    assert {reason for name, reason in values if name == s.SPANS_DROPPED} == set(s.DROP_REASONS)
    table = {m.name: m for m in s.METRICS}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:  # units, descriptions and kinds are the schema's
                row = table[metric.name]
                assert (metric.unit, metric.description) == (row.unit, row.meaning)
                assert (type(metric.data).__name__ == "Gauge") == (row.instrument == "gauge")
    provider.shutdown()


def test_queue_drops_are_counted_on_the_sdk_batch_processor() -> None:
    """Pins the SDK's layout: a full batch queue calls our hook (and the previous one)."""

    class Slow:
        def export(self, spans):
            return None

        def shutdown(self):
            pass

    processor = BatchSpanProcessor(Slow(), max_queue_size=2, schedule_delay_millis=60_000,
                                   max_export_batch_size=2)
    previous = processor._batch_processor._metrics
    drops = count_queue_drops(processor)
    assert isinstance(drops, QueueDrops) and drops.previous is previous
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(5):
        tracer.start_span("x").end()
    assert drops.dropped >= 1
    provider.shutdown()


# ------------------------------------------------------------------ doctor --metrics (parsing)

HEALTH_PAGE = """# TYPE cosyvoice_otel_spans_exported counter
cosyvoice_otel_spans_exported_total 12.0
# TYPE cosyvoice_otel_spans_dropped counter
cosyvoice_otel_spans_dropped_total{reason="queue_full"} 0.0
cosyvoice_otel_spans_dropped_total{reason="spool_cap"} 3.0
# TYPE cosyvoice_otel_spool_size_bytes gauge
cosyvoice_otel_spool_size_bytes 2048.0
# TYPE tts_requests counter
tts_requests_total{cosyvoice_mode="sft"} 5.0
"""


def test_doctor_reads_the_health_counters_and_warns_on_drops(monkeypatch) -> None:
    import io

    from cosyvoice_otel.tools import doctor

    assert doctor.read_health(HEALTH_PAGE) == {
        "cosyvoice_otel_spans_exported_total": 12.0,
        "cosyvoice_otel_spans_dropped_total{queue_full}": 0.0,
        "cosyvoice_otel_spans_dropped_total{spool_cap}": 3.0,
        "cosyvoice_otel_spool_size_bytes": 2048.0}

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(doctor.urllib.request, "urlopen",
                        lambda url, timeout: Response(HEALTH_PAGE.encode()))
    lines = {line.what: (line.level, line.detail) for line in doctor.check_metrics("http://x")}
    assert lines["tracer health"][0] == "ok" and "exported 12," in lines["tracer health"][1]
    assert lines["spans dropped"] == ("warn", "spool_cap 3 (traces in Zipkin are incomplete; "
                                              "the app is unaffected)")
    assert lines["spool"][0] == "warn" and lines["spool"][1].startswith("2048 bytes waiting")


def test_doctor_metrics_unreachable_or_empty(refused_endpoint, monkeypatch) -> None:
    from cosyvoice_otel.tools import doctor

    [line] = list(doctor.check_metrics(refused_endpoint))
    assert line.level == "fail" and "did not answer" in line.detail
    monkeypatch.setattr(doctor, "read_health", lambda text: {})
    monkeypatch.setattr(doctor.urllib.request, "urlopen", lambda url, timeout: __import__(
        "contextlib").nullcontext(__import__("io").BytesIO(b"")))
    [line] = list(doctor.check_metrics("http://x"))
    assert line.level == "warn" and "--metrics prometheus" in line.detail


# ------------------------------------------------------------- the recorder, value by value

class FakeStage:
    """What ``TtsMetrics.stage_ended`` reads from a StageSpan: name, span, ctx, parents, start."""

    def __init__(self, tracer, name: str, attrs: dict, started: float, parent=None,
                 counters: dict | None = None) -> None:
        from opentelemetry import trace as api

        self.name, self.started, self.parent = name, started, parent
        self.counters = counters or {}
        self.span = tracer.start_span(name, attributes=attrs)
        self.ctx = api.set_span_in_context(self.span)

    def find(self, name: str):
        stage = self
        while stage is not None and stage.name != name:
            stage = stage.parent
        return stage


def _by_name(reader) -> dict:
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = (metric, sm.scope)
    return out


@pytest.mark.parametrize("failed", [False, True])
def test_each_instrument_gets_its_value_labels_and_exemplar(monkeypatch, failed) -> None:
    from cosyvoice_otel.instrumentation import metrics as module

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = module.create(provider, "2.0")
    tracer = TracerProvider().get_tracer("t")
    monkeypatch.setattr(module.time, "monotonic", lambda: 10.0)
    error = {s.ERROR_TYPE: "KeyError"} if failed else {}
    request = FakeStage(tracer, s.INFERENCE, {s.MODE: "zero_shot", s.WARMUP: False,
                                              s.STREAM: True, s.FIRST_CHUNK_MS: 250.0,
                                              s.RTF: 0.5, s.PLAYBACK_STALL_MS: 300.0,
                                              **error}, started=8.0, counters={"ttft": 0.125})
    llm = FakeStage(tracer, s.ACOUSTIC_MODEL, {s.TOKENS_PER_SECOND: 42.0, **error},
                    started=9.5, parent=FakeStage(tracer, s.MODEL_TTS, {}, 9.0, request))
    recorder.stage_ended(llm)
    recorder.stage_ended(request)
    got = _by_name(reader)
    base = {s.MODE: "zero_shot", s.WARMUP: False, s.SERVICE_VERSION: "2.0"}
    request_labels = {**base, s.STREAM: True, **error}

    def only(name):
        (point,) = got[name][0].data.data_points
        return point

    stages = {p.attributes[s.STAGE]: p for p in got[s.STAGE_DURATION][0].data.data_points}
    assert stages[s.ACOUSTIC_MODEL].sum == 0.5 and stages[s.INFERENCE].sum == 2.0
    assert dict(stages[s.ACOUSTIC_MODEL].attributes) == {**base, s.STAGE: s.ACOUSTIC_MODEL,
                                                         **error}
    assert dict(stages[s.INFERENCE].attributes) == {**base, s.STAGE: s.INFERENCE, **error}
    expected = {s.REQUEST_DURATION: (2.0, request_labels),
                s.TIME_TO_FIRST_AUDIO: (0.25, {**base, s.STREAM: True}),
                s.RTF_METRIC: (0.5, {**base, s.STREAM: True}),
                s.LLM_TOKEN_RATE: (42.0, base),
                s.PLAYBACK_STALL: (0.3, base),  # the stall metric: streamed requests only
                s.GENAI_SERVER_TTFT: (0.125, {s.MODE: "zero_shot", s.STREAM: True,
                                              s.SERVICE_VERSION: "2.0",
                                              s.GENAI_OPERATION: "text_to_speech",
                                              s.GENAI_PROVIDER: "cosyvoice"})}
    for name, (value, labels) in expected.items():
        point = only(name)
        assert (point.sum, point.count, dict(point.attributes)) == (value, 1, labels), name
    spans = {s.REQUEST_DURATION: request, s.TIME_TO_FIRST_AUDIO: request, s.RTF_METRIC: request,
             s.LLM_TOKEN_RATE: llm, s.PLAYBACK_STALL: request, s.GENAI_SERVER_TTFT: request}
    for name, stage in spans.items():  # each observation links to its own stage's span
        (exemplar,) = only(name).exemplars
        assert exemplar.span_id == stage.span.get_span_context().span_id, name
    for point in stages.values():
        assert len(point.exemplars) == 1
    requests = only(s.REQUESTS)
    assert (requests.value, dict(requests.attributes)) == (1, request_labels)
    if failed:
        errors = only(s.ERRORS)
        assert (errors.value, dict(errors.attributes)) == (1, {
            s.ERROR_TYPE: "KeyError", s.MODE: "zero_shot", s.SERVICE_VERSION: "2.0"})
    else:
        assert s.ERRORS not in got
    table = {m.name: m for m in s.METRICS}
    for name, (metric, scope) in got.items():  # units and descriptions are the schema's
        assert (metric.unit, metric.description) == (table[name].unit, table[name].meaning)
        from cosyvoice_otel.version import __version__

        assert (scope.name, scope.version) == ("cosyvoice_otel", __version__)
    provider.shutdown()


def test_a_stage_outside_a_request_uses_its_own_attributes_and_no_version_label() -> None:
    from cosyvoice_otel.instrumentation import metrics as module

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    recorder = module.create(provider)
    tracer = TracerProvider().get_tracer("t")
    stage = FakeStage(tracer, s.SPEAKER_ADD, {s.MODE: "zero_shot"}, started=0.0)
    recorder.stage_ended(stage)
    (point,) = _by_name(reader)[s.STAGE_DURATION][0].data.data_points
    assert dict(point.attributes) == {s.STAGE: s.SPEAKER_ADD, s.MODE: "zero_shot"}
    assert point.sum > 0
    provider.shutdown()


# ------------------------------------------------------------- exposition, line by line

def test_the_exposition_of_every_kind_of_point() -> None:
    from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.metrics.export import (
        HistogramDataPoint as HPoint,
    )
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    cumulative = AggregationTemporality.CUMULATIVE
    hist = HPoint(attributes={"cosyvoice.mode": "sft", "cosyvoice.stream": True},
                  start_time_unix_nano=0,
                  time_unix_nano=1, count=6, sum=9.5, bucket_counts=[1, 2, 3],
                  explicit_bounds=[0.5, 1.0], min=0.1, max=5.0, exemplars=[
                      # without a trace: not shown; on a bound: that bucket; above all: +Inf
                      Exemplar({}, 0.2, 4_000_000_000, span_id=None, trace_id=None),
                      Exemplar({}, 1.0, 2_000_000_000, span_id=0xB, trace_id=0xA),
                      Exemplar({}, 5.0, 3_000_000_000, span_id=0xD, trace_id=0xC)])
    metrics = [
        Metric("tts.request.duration", "", "s", Histogram([hist], cumulative)),
        Metric("tts.requests", "calls", "{request}", Sum(
            [NumberDataPoint({"error.type": "KeyError"}, 0, 1, 3)], cumulative, True)),
        Metric("queue.depth", "depth", "1", Sum(
            [NumberDataPoint({}, 0, 1, -2)], cumulative, False)),
        Metric("cosyvoice_otel.spool.size", "bytes", "By", Gauge(
            [NumberDataPoint({"disk": "a"}, 0, 1, 4096)])),
        Metric("jobs_total", "jobs", "", Sum([NumberDataPoint({}, 0, 1, 7)], cumulative, True)),
    ]
    data = MetricsData([
        ResourceMetrics(Resource({}), [], ""),  # no attributes: no target_info from it
        ResourceMetrics(Resource({"service.name": "svc"}), [
            ScopeMetrics(InstrumentationScope("t"), metrics, "")], ""),
        ResourceMetrics(Resource({"service.name": "other"}), [], "")])  # one target_info

    class Registry:
        def collect(self):
            return to_families(data)

    text = generate_openmetrics(Registry()).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")
             or line.startswith("# HELP")]
    assert lines == [
        '# HELP target Target metadata',
        'target_info{service_name="svc"} 1.0',
        '# HELP tts_request_duration_seconds tts.request.duration',
        'tts_request_duration_seconds_bucket{cosyvoice_mode="sft",cosyvoice_stream="true",le="0.5"} 1.0',
        'tts_request_duration_seconds_bucket{cosyvoice_mode="sft",cosyvoice_stream="true",le="1.0"} 3.0 # '
        '{span_id="000000000000000b",trace_id="0000000000000000000000000000000a"} 1.0 2.0',
        'tts_request_duration_seconds_bucket{cosyvoice_mode="sft",cosyvoice_stream="true",le="+Inf"} 6.0 # '
        '{span_id="000000000000000d",trace_id="0000000000000000000000000000000c"} 5.0 3.0',
        'tts_request_duration_seconds_count{cosyvoice_mode="sft",cosyvoice_stream="true"} 6.0',
        'tts_request_duration_seconds_sum{cosyvoice_mode="sft",cosyvoice_stream="true"} 9.5',
        '# HELP tts_requests calls',
        'tts_requests_total{error_type="KeyError"} 3.0',
        '# HELP queue_depth depth',
        'queue_depth -2.0',
        '# HELP cosyvoice_otel_spool_size_bytes bytes',
        'cosyvoice_otel_spool_size_bytes{disk="a"} 4096.0',
        '# HELP jobs jobs',
        'jobs_total 7.0',
    ]
    assert to_families(None) == []
