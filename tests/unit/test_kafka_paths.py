"""The Kafka exporter's remaining paths, settled in memory (issue 31: lines only the e2e Kafka
tests ran, through a broker the test stops and starts): a batch handed over is produced as it
is, a refusal at produce time goes the refusal's way, Kafka back after an outage is one line,
a replay waits for its delivery report before it says it handed one over."""

from __future__ import annotations

import json
import logging

import pytest

from cosyvoice_otel.sdk import kafka_exporter
from cosyvoice_otel.sdk.kafka_exporter import PROBE_INTERVAL

from .test_generated_gaps import RecordingProducer, _kafka_exporter, kafka_error, spans_payload


@pytest.fixture
def kafka(tmp_path):
    exporter = _kafka_exporter(tmp_path, topic="zipkin")
    real, exporter.producer = exporter.producer, RecordingProducer()
    yield exporter
    exporter.producer = RecordingProducer()
    for path in exporter.spool.files():
        exporter.spool.remove(path)
    exporter.shutdown()
    real.purge()


def test_a_batch_handed_over_is_produced_as_encoded(kafka) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert kafka._hand_over(spans_payload(2)) is SpanExportResult.SUCCESS
    assert kafka.producer.produced == [spans_payload(2)]


def test_a_message_refused_at_produce_time_is_split_or_dropped(kafka) -> None:
    def too_large(topic, payload, on_delivery=None):
        kafka.producer.produced.append(payload)
        if len(json.loads(payload)) > 1:
            raise ValueError("Message size too large")

    kafka.producer.produce = too_large
    assert kafka._produce(spans_payload(4), None) is False  # not taken: split, in halves
    assert [len(json.loads(p)) for p in kafka.producer.produced] == [4, 2, 1, 1, 2, 1, 1]
    assert kafka.counters["split"] == 3 and kafka.dropped == {}


def test_kafka_back_after_an_outage_is_one_line(kafka, caplog) -> None:
    kafka._report(kafka_error("_TRANSPORT"), spans_payload(1), 1, None)
    assert kafka._away
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel"):
        kafka._report(None, spans_payload(1), 1, None)
        kafka._report(None, spans_payload(1), 1, None)
    assert not kafka._away
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: Kafka 127.0.0.1:9 reachable again"]


def test_a_replay_waits_for_its_delivery_report(kafka) -> None:
    assert kafka._replay_one() is False  # nothing spooled: nothing to do
    kafka.spool.put(spans_payload(2))
    assert kafka._replay_one() is True
    assert kafka.producer.produced == [spans_payload(2)]
    assert kafka.producer.flushed == [15.0]  # its report decides: removed, or kept


def test_the_poller_replays_a_spool_at_most_once_per_probe_interval(kafka, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(kafka_exporter.time, "monotonic", lambda: clock[0])
    replays: list[float] = []

    def replay_one() -> bool:
        replays.append(clock[0])
        return False

    kafka.spool.put(spans_payload(1))
    kafka._replay_one = replay_one
    polls = iter(range(3))

    def poll(timeout=0):
        if next(polls, None) is None:
            kafka._closed = True
        clock[0] += 0.1

    kafka.producer.poll = poll
    kafka._next_probe = 0.0
    kafka._poll_loop()
    kafka._closed = False
    assert replays == [1000.1]  # once, then not again within the probe interval
    assert kafka._next_probe == pytest.approx(1000.1 + PROBE_INTERVAL)
