"""Spans through a real Kafka broker (KRaft, Maven Central's jars) into Zipkin's own Kafka
collector (issue 12): two traced replicas behind nginx, a broker crash and restart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from cosyvoice_otel.tools import zipkin_server

from ..support.helpers import (
    BIN,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_until,
)
from .test_nginx import NGINX, start_nginx

# one broker for these tests, which kill and restart it: they run in one xdist worker
pytestmark = [pytest.mark.zipkin, pytest.mark.xdist_group("kafka")]
TEXT = "Through Kafka. 第二句。"


def _need(ok: bool, what: str) -> None:
    if not ok:
        unavailable(f"{what} (CI=true never skips; .ci/setup installs it)", what)


@pytest.fixture
def broker(kafka_broker):
    return kafka_broker


@pytest.fixture(scope="module")
def zipkin_on_kafka(kafka_broker):
    """A Zipkin whose Kafka collector reads the broker's ``zipkin`` topic."""
    try:
        server = zipkin_server.start(env={"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap})
    except zipkin_server.ZipkinServerError as exc:
        _need(False, str(exc))
    yield server
    server.stop()


def spans_of(zipkin, trace_id: str) -> list[dict]:
    return zipkin.client().trace(trace_id)


# ----------------------------------------------------------------- the exporter on its own

def make_exporter(bootstrap: str, tmp_path: Path, **config):
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter

    return KafkaZipkinExporter(bootstrap, "zipkin", str(tmp_path / "spool"), 8 * 1024 * 1024,
                               config={"message.timeout.ms": 1500, **config})


def batch(count: int, trace_id: int | None = None) -> list:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "kafka-unit"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("root"):
        for i in range(count - 1):
            provider.get_tracer("t").start_span(f"s{i}").end()
    return list(memory.get_finished_spans())


def test_batches_reach_zipkin_through_kafka(zipkin_on_kafka, broker, tmp_path) -> None:
    exporter = make_exporter(broker.bootstrap, tmp_path)
    spans = batch(5)
    assert exporter.export(spans).name == "SUCCESS"
    assert exporter.force_flush(15000)
    assert exporter.counters["sent"] == 5
    trace_id = f"{spans[0].context.trace_id:032x}"
    got = zipkin_on_kafka.client().wait_for_trace(trace_id, lambda sp: len(sp) == 5, timeout=60)
    assert sorted(s["name"] for s in got) == ["root", "s0", "s1", "s2", "s3"]
    exporter.shutdown()


def test_a_batch_too_large_for_kafka_is_split_and_only_a_span_too_large_alone_is_lost(
        zipkin_on_kafka, broker, tmp_path) -> None:
    """No batch can block on Kafka either: over ``message.max.bytes`` it is bisected down to
    what the broker takes; a span too large alone is dropped and counted (too_large)."""
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter

    exporter = KafkaZipkinExporter(broker.bootstrap, "zipkin", str(tmp_path / "spool"),
                                   1 << 20, config={"message.max.bytes": 4000})
    spans = batch(40)
    big = batch(1)[0]
    big._attributes = {"payload": "x" * 8000}  # alone over the limit
    assert exporter.export([*spans, big]).name == "SUCCESS"
    assert exporter.force_flush(15000)
    assert exporter.counters["sent"] == 40 and exporter.counters["split"] > 0
    assert exporter.dropped == {"too_large": 1}
    trace_id = f"{spans[0].context.trace_id:032x}"
    got = zipkin_on_kafka.client().wait_for_trace(trace_id, lambda sp: len(sp) == 40, timeout=60)
    assert len(got) == 40
    exporter.shutdown()


def test_with_no_broker_batches_are_spooled_then_replayed(broker, tmp_path) -> None:
    exporter = make_exporter(broker.bootstrap, tmp_path)
    broker.kill()
    try:
        for _ in range(3):
            assert exporter.export(batch(4)).name == "SUCCESS"  # never blocks, never fails
        assert wait_until(lambda: exporter.counters["spooled"] == 12, timeout=20)
        assert exporter.counters["failures"] >= 3 and exporter.spool.size > 0
    finally:
        broker.start()
    assert wait_until(lambda: exporter.counters["replayed"] == 12, timeout=60), \
        exporter.counters
    assert exporter.spool.size == 0 and exporter.dropped == {}
    exporter.shutdown()


def test_at_the_spool_cap_batches_are_dropped_and_counted(tmp_path) -> None:
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter

    exporter = KafkaZipkinExporter(f"127.0.0.1:{free_port()}", "zipkin",
                                   str(tmp_path / "spool"), 3000,
                                   config={"message.timeout.ms": 500})
    for _ in range(4):
        exporter.export(batch(6))
    assert wait_until(lambda: exporter.counters["spooled"] + exporter.dropped["spool_cap"] == 24,
                      timeout=20)
    assert exporter.dropped["spool_cap"] > 0 and exporter.spool.size <= 3000
    exporter.shutdown()


# --------------------------------------------------------------- replicas, nginx, a crash

def test_two_replicas_through_kafka_survive_a_broker_crash(broker, zipkin_on_kafka, launch_app,
                                                           make_model, tmp_path) -> None:
    _need(NGINX is not None, "nginx is not installed (.ci/setup installs Debian's nginx)")
    model = make_model(3)
    replicas = []
    for _ in range(2):
        port, metrics_port = free_port(), free_port()
        app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "kafka",
                          "--kafka-bootstrap-servers", broker.bootstrap, "--service-name",
                          # ONE spool folder for both, as on one host (issue 36): each
                          # spooled batch must be replayed by one replica, not by both
                          "replicas", "--spool-dir", str(tmp_path / "spool"),
                          "--metrics", "prometheus", "--metrics-host", "127.0.0.1",
                          "--metrics-port", str(metrics_port), "--", "python",
                          "examples/server.py", "--port", str(port), "--model_dir",
                          str(model)], app_env(), port)
        app.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        replicas.append(app)
    proxy_port = free_port()
    proxy = start_nginx(tmp_path, [f"127.0.0.1:{app.port}" for app in replicas], proxy_port,
                        tmp_path / "access.log")
    sent: list[str] = []

    def synthesize() -> None:
        trace_id = new_trace_id()
        resp = requests.get(f"http://127.0.0.1:{proxy_port}/inference_sft",
                            params={"tts_text": TEXT, "spk_id": "中文女"}, timeout=60,
                            headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(),
                                     "X-B3-Sampled": "1"})
        assert resp.status_code == 200 and len(resp.content) > 1000  # never a failed request
        sent.append(trace_id)

    try:
        for _ in range(4):
            synthesize()
        broker.kill()  # a crash, mid-run
        for _ in range(4):
            synthesize()
        # past librdkafka's message timeout (10 s): the batches are in the spools
        assert wait_until(lambda: sum(_metric(app, "cosyvoice_otel_spans_spooled_total")
                                      for app in replicas) > 0, timeout=40)
        broker.start()
        for _ in range(2):
            synthesize()
        client = zipkin_on_kafka.client()
        instances = set()
        for trace_id in sent:  # none missing: every request is one complete trace
            spans = client.wait_for_trace(trace_id, lambda sp: any(
                s["name"] == "cosyvoice.inference" for s in sp) and any(
                s.get("kind") == "SERVER" for s in sp), timeout=90)
            assert spans, trace_id
            ids = {s["tags"].get("service.instance.id") for s in spans}
            assert len(ids) == 1 and None not in ids, ids  # one replica served it, named
            instances |= ids
        assert len(instances) == 2  # both replicas served (round robin)
        def total(name: str) -> float:
            return sum(_metric(app, name) for app in replicas)

        # every spooled span replayed, and once: a batch both replicas replayed counts twice
        assert wait_until(lambda: total("cosyvoice_otel_spans_replayed_total")
                          >= total("cosyvoice_otel_spans_spooled_total") > 0, timeout=60)
        assert total("cosyvoice_otel_spans_replayed_total") == total(
            "cosyvoice_otel_spans_spooled_total")
        assert total("cosyvoice_otel_spans_dropped_total") == 0
        report = subprocess.run(
            [str(BIN / "cosyvoice-traced"), "report", "--zipkin", zipkin_on_kafka.base_url,
             "--service", "replicas", "--by", "service.instance.id", "--json"],
            capture_output=True, text=True, timeout=120, env=app_env())
        assert report.returncode == 0, report.stderr
        groups = json.loads(report.stdout)
        assert set(groups) == instances
        assert sum(g["requests"] for g in groups.values()) >= len(sent) - 2  # warm-ups aside
    finally:
        proxy.terminate()
        proxy.wait(20)


def _metric(app, name: str) -> float:
    text = requests.get(app.metrics_url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_kafka_without_its_client_is_a_clear_error(tmp_path) -> None:
    """The launcher checks confluent-kafka before starting the app (one line, exit 2)."""
    script = ("import sys, importlib.util as u; real = u.find_spec; "
              "u.find_spec = lambda n, *a: None if n == 'confluent_kafka' else real(n, *a); "
              "from cosyvoice_otel.launcher.cli import main; "
              "sys.argv = ['cosyvoice-traced', 'run', '--exporter', 'kafka', '--', 'true']; "
              "sys.exit(main())")
    out = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "pip install 'cosyvoice-otel[kafka]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_export_error_counts_as_dropped_like_the_http_exporter(tmp_path) -> None:
    """Every exporter counts its losses by reason the same way (export_base), so the
    tracer-health metrics split them alike: here nothing went to the spool cap."""
    from cosyvoice_otel.sdk.health import TracerHealth
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter
    from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

    exporter = KafkaZipkinExporter(f"127.0.0.1:{free_port()}", "zipkin", str(tmp_path), 1000)

    def broken(spans):
        raise ValueError("cannot encode")

    exporter.encode = broken
    assert exporter.export(batch(3)).name == "FAILURE"
    assert exporter.dropped == {"export_error": 3}
    totals = TracerHealth([RedactingSpanExporter(exporter)]).totals()
    assert (totals["dropped.export_error"], totals["dropped.spool_cap"]) == (3, 0)
    exporter.shutdown()
