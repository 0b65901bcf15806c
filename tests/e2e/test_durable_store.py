"""Zipkin on a durable store: OpenSearch 2.19.6 (Maven Central's server modules, Java 17) as
Zipkin's ``elasticsearch`` storage, fed through Kafka (Zipkin's own Kafka collector). A traced
request and a few thousand more traces go in; Zipkin is stopped and a new one started on the
same store; the request's trace is read back by id and ``report`` reads them all."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time

import pytest
import requests

from cosyvoice_otel import schema as s
from cosyvoice_otel.tools import zipkin_server
from cosyvoice_otel.tools.checks import check_synthesis

from ..support.helpers import BIN, ROOT, app_env, free_port, new_span_id, new_trace_id, unavailable

# the Kafka broker is shared with test_kafka.py, whose tests kill and restart it: one worker
pytestmark = [pytest.mark.zipkin, pytest.mark.xdist_group("kafka")]
MANY = 2000


@pytest.fixture(scope="module")
def opensearch():
    from ..support.opensearch_server import OpenSearchError, OpenSearchNode

    if shutil.which("java") is None or shutil.which("mvn") is None:
        message = "java and mvn are needed for the OpenSearch node (.ci/setup has them)"
        unavailable(message)
    try:
        node = OpenSearchNode()
    except OpenSearchError as exc:
        unavailable(str(exc))
    yield node
    node.stop()


def zipkin_on(opensearch, kafka_broker=None, topic: str = "") -> zipkin_server.ZipkinServer:
    env = {"STORAGE_TYPE": "elasticsearch", "ES_HOSTS": opensearch.url}
    if kafka_broker is not None:
        env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_broker.bootstrap, KAFKA_TOPIC=topic)
    return zipkin_server.start(env=env)


def synthetic(service: str, count: int) -> list[list[dict]]:
    """``count`` finished requests of the last ten minutes: inference > acoustic_model,
    vocoder; every tenth vocoder failed."""
    now = int(time.time() * 1e6) - 600_000_000
    traces = []
    for i in range(count):
        trace_id, ids = secrets.token_hex(16), [secrets.token_hex(8) for _ in range(3)]
        endpoint = {"serviceName": service}
        start = now + i * 250_000
        failed = {"error": "Boom", "error.type": "Boom"} if i % 10 == 0 else {}
        traces.append([
            {"traceId": trace_id, "id": ids[0], "name": s.INFERENCE, "timestamp": start,
             "duration": 200_000, "localEndpoint": endpoint, "tags": {s.MODE: "sft"}},
            {"traceId": trace_id, "id": ids[1], "parentId": ids[0], "name": s.ACOUSTIC_MODEL,
             "timestamp": start + 10, "duration": 120_000, "localEndpoint": endpoint},
            {"traceId": trace_id, "id": ids[2], "parentId": ids[0], "name": s.VOCODER,
             "timestamp": start + 130_000, "duration": 20_000 + i, "localEndpoint": endpoint,
             "tags": failed},
        ])
    return traces


def produce(bootstrap: str, topic: str, traces: list[list[dict]]) -> None:
    """What any Zipkin reporter does on Kafka: one JSON list of spans per message."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for spans in traces:
        producer.produce(topic, json.dumps(spans).encode())
        producer.poll(0)
    assert producer.flush(60) == 0


def test_traces_survive_a_zipkin_restart_on_opensearch(opensearch, kafka_broker, launch_app,
                                                      make_model) -> None:
    topic = f"zipkin-durable-{secrets.token_hex(3)}"
    service, bulk = f"durable-{secrets.token_hex(3)}", f"durable-bulk-{secrets.token_hex(3)}"
    first = zipkin_on(opensearch, kafka_broker, topic)
    try:
        port = free_port()
        app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "kafka",
                          "--kafka-bootstrap-servers", kafka_broker.bootstrap, "--kafka-topic",
                          topic, "--service-name", service, "--", "python", "examples/server.py",
                          "--port", str(port), "--model_dir", str(make_model(3))], app_env(),
                         port)
        trace_id = new_trace_id()
        resp = requests.get(f"{app.url}/inference_sft", timeout=60, params={
            "tts_text": "Kept on a durable store. 第二句。", "spk_id": "中文女"},
            headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(),
                     "X-B3-Sampled": "1"})
        assert resp.status_code == 200
        produce(kafka_broker.bootstrap, topic, synthetic(bulk, MANY))
        client = first.client()
        spans = client.wait_for_trace(trace_id, lambda sp: not check_synthesis(sp, "sft", False),
                                      timeout=60)
        assert check_synthesis(spans, "sft", False) == []
        # the loop ends as soon as all are stored; a busy machine's ingest took over 90 s once
        # (1999 of 2000 counted at the deadline)
        deadline = time.monotonic() + 240
        stored = 0
        while time.monotonic() < deadline and stored < MANY:
            # the index refreshes every second: poll the count the storage answers
            stored = count_traces(opensearch.url, bulk)
            time.sleep(1)
        assert stored == MANY
        app.stop()  # the app flushes what it still held
        before = wait_until_stable(lambda: client.trace(trace_id))
    finally:
        first.stop()  # everything Zipkin kept in memory is gone with it

    second = zipkin_on(opensearch)  # a new Zipkin, no Kafka: only the store has the traces
    try:
        again = second.client().trace(trace_id)
        assert sorted(sp["id"] for sp in again) == sorted(sp["id"] for sp in before)
        assert check_synthesis(again, "sft", False) == []
        out = subprocess.run([str(BIN / "cosyvoice-traced"), "report", "--zipkin",
                              second.base_url, "--service", bulk, "--limit", "10000",
                              "--include-warmup", "--json"], cwd=ROOT, env=app_env(),
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout)["all"]
        assert figures["requests"] == MANY
        assert figures["stages"][s.VOCODER]["count"] == MANY
        assert figures["errors_by_type"] == {"Boom": MANY // 10}
        # the complaint's workflow on the durable store: every failure in the window, its stage
        out = subprocess.run([str(BIN / "cosyvoice-traced"), "triage", "--zipkin",
                              second.base_url, "--at", "now", "--window", "40m", "--service",
                              bulk, "--json"], cwd=ROOT, env=app_env(), capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)
        assert found["by_cause"] == {s.VOCODER: MANY // 10}
        assert {(r["cause"], r["reason"]) for r in found["requests"]} == {("stage", "Boom")}
    finally:
        second.stop()


def wait_until_stable(read, settle: float = 2.0, timeout: float = 30.0) -> list[dict]:
    """What ``read()`` returns once it stopped changing for ``settle`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < settle:
        time.sleep(0.5)
        now = read()
        if len(now) != len(last):
            last, since = now, time.monotonic()
    return last


def count_traces(es_url: str, service: str) -> int:
    """Distinct trace ids of ``service`` in Zipkin's span indices (read from the store itself,
    not through a Zipkin)."""
    body = json.dumps({"size": 0, "query": {"term": {"localEndpoint.serviceName": service}},
                       "aggs": {"traces": {"cardinality": {"field": "traceId",
                                                           "precision_threshold": 40000}}}})
    resp = requests.post(f"{es_url}/zipkin*span-*/_search", data=body, timeout=10,
                         headers={"Content-Type": "application/json"})
    if resp.status_code != 200:
        return 0
    return int(resp.json()["aggregations"]["traces"]["value"])
