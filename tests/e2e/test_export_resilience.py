"""No single batch can block the export: 413 split, rejected and unreadable spool files, a
Zipkin that answers too late, stale and partial spool files. Against the real Zipkin, through
a front that refuses big bodies or answers late (``zipkin_front.py``)."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cosyvoice_otel.sdk.spool import Spool
from cosyvoice_otel.sdk.zipkin_http import MAX_UNCERTAIN, ResilientZipkinExporter

from ..support.zipkin_front import ZipkinFront

pytestmark = pytest.mark.zipkin


def zipkin_exporter(**given) -> ResilientZipkinExporter:
    """The exporter with the settings' defaults for what a test does not set (5 s, 64 MiB):
    the configurator always passes all four (settings.EXPORTER_TABLE)."""
    return ResilientZipkinExporter(**{"timeout": 5.0, "spool_max_bytes": 64 << 20, **given})


def make_trace(count: int, size: int = 300, big: int | None = None) -> tuple[str, list]:
    """``count`` spans of ONE trace (a root and its children); span ``big`` gets a huge tag."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "resilience"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        for i in range(count - 1):
            with tracer.start_as_current_span(f"child-{i}") as span:
                span.set_attribute("payload", "x" * (60_000 if i == big else size))
    spans: list[ReadableSpan] = list(memory.get_finished_spans())
    return f"{root.get_span_context().trace_id:032x}", spans


def wait_for(condition, timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def test_a_batch_zipkin_finds_too_large_is_split_and_every_span_arrives(zipkin, tmp_path) -> None:
    trace_id, spans = make_trace(200)
    with ZipkinFront(zipkin.endpoint, max_body=20_000) as front:
        exporter = zipkin_exporter(endpoint=front.endpoint, spool_dir=str(tmp_path))
        assert exporter.export(spans).name == "SUCCESS"
        later_id, later = make_trace(3)  # a batch behind it is not held up
        assert exporter.export(later).name == "SUCCESS"
        exporter.shutdown()
    assert 413 in front.statuses and exporter.counters["split"] > 0
    stored = zipkin.client().wait_for_trace(trace_id, lambda s: len(s) >= 200, timeout=20)
    assert len({s["id"] for s in stored}) == 200
    assert len(zipkin.client().wait_for_trace(later_id, lambda s: len(s) >= 3, timeout=20)) == 3
    assert exporter.spool.oldest() is None and exporter.counters["spooled"] == 0


def test_a_span_too_large_alone_is_dropped_counted_and_logged_once(zipkin, tmp_path,
                                                                  caplog) -> None:
    trace_id, spans = make_trace(10, big=4)
    with ZipkinFront(zipkin.endpoint, max_body=20_000) as front, \
            caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter = zipkin_exporter(endpoint=front.endpoint, spool_dir=str(tmp_path))
        exporter.export(spans)
        exporter.shutdown()
    stored = zipkin.client().wait_for_trace(trace_id, lambda s: len(s) >= 9, timeout=20)
    assert len(stored) == 9 and all(s["name"] != "child-4" for s in stored)
    assert exporter.dropped == {"too_large": 1}
    assert len([r for r in caplog.records if "HTTP 413" in r.getMessage()]) == 1


def test_a_trace_zipkin_refuses_with_500_is_dropped_and_later_traces_arrive(zipkin,
                                                                            tmp_path) -> None:
    """Zipkin's storage refuses one trace (a mapping conflict on one tag value): 500 for every
    body holding it. It is dropped and counted; the traces behind it arrive, none waits."""
    poison_id, poison = make_trace(6)
    with ZipkinFront(zipkin.endpoint, refuse=lambda body: 500 if poison_id.encode() in body
                     else None) as front:
        exporter = zipkin_exporter(endpoint=front.endpoint, spool_dir=str(tmp_path),
                                           pipelined=True)
        later = [make_trace(3) for _ in range(10)]
        _, first_good = later[0]
        assert exporter.export(poison + first_good).name == "SUCCESS"
        for _, spans in later[1:]:
            assert exporter.export(spans).name == "SUCCESS"
        exporter.force_flush(10_000)
        client = zipkin.client()
        for trace_id, _ in later:  # each within the generous deadline of wait_for_trace
            assert len(client.wait_for_trace(trace_id, lambda s: len(s) >= 3, timeout=60)) == 3
        exporter.shutdown()
    assert exporter.dropped == {"rejected": 6} and exporter.spool.oldest() is None
    assert client.trace(poison_id) == []


def test_a_413_front_gives_a_few_log_lines_and_counts_every_span(zipkin, tmp_path,
                                                                 caplog) -> None:
    from cosyvoice_otel.sdk.health import TracerHealth
    from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

    _, spans = make_trace(315, size=400)
    with ZipkinFront(zipkin.endpoint, max_body=300) as front, \
            caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter = zipkin_exporter(endpoint=front.endpoint, spool_dir=str(tmp_path))
        health = TracerHealth([RedactingSpanExporter(exporter)])
        exporter.export(spans)
        exporter.shutdown()
    assert exporter.dropped == {"too_large": 315} and len(caplog.records) <= 3
    totals = health.totals()
    assert (totals["dropped.too_large"], totals["exported"]) == (315, 0)


def test_replay_goes_past_unreadable_rejected_and_oversized_files(zipkin, tmp_path,
                                                                 caplog) -> None:
    big_id, big = make_trace(120)
    small_id, small = make_trace(2)
    encode = zipkin_exporter(endpoint=zipkin.endpoint, spool_dir=str(tmp_path / "x"))
    spool_dir = tmp_path / "spool"
    with ZipkinFront(zipkin.endpoint, max_body=20_000) as front:
        exporter = zipkin_exporter(endpoint=front.endpoint, spool_dir=str(spool_dir))
        spool = exporter.spool
        spool.put(b"{not json")                                       # unreadable
        spool.put(b'[{"traceId": "NOT-HEX", "id": "x", "name": "n"}]')  # Zipkin answers 400
        spool.put(encode.encode(big))                                 # 413: split on replay
        spool.put(encode.encode(small))                               # behind all of them
        with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
            exporter.replay()
        exporter.shutdown()
    assert spool.oldest() is None
    assert [p.name for p in (spool.directory / "bad").iterdir()] != []
    assert exporter.dropped == {"spool_unreadable": 0, "rejected": 1}  # no span in the junk
    client = zipkin.client()
    assert len(client.wait_for_trace(big_id, lambda s: len(s) >= 120, timeout=20)) == 120
    assert len(client.wait_for_trace(small_id, lambda s: len(s) >= 2, timeout=20)) == 2
    assert exporter.counters["replayed"] == 122


def test_a_zipkin_that_answers_too_late_gets_a_batch_at_most_twice(zipkin, tmp_path) -> None:
    """At-least-once, bounded: the answer times out (Zipkin stored it anyway), the batch is
    resent once and counted as a possible duplicate; a second timeout drops it."""
    trace_id, spans = make_trace(5)
    with ZipkinFront(zipkin.endpoint, delay_s=2.5) as front:
        exporter = zipkin_exporter(endpoint=front.endpoint, timeout=1,
                                           spool_dir=str(tmp_path))
        exporter.export(spans)
        assert wait_for(lambda: exporter.spool.oldest() is None, timeout=30)
        assert len(front.bodies) == 1 + MAX_UNCERTAIN  # then dropped, not resent forever
        assert exporter.dropped == {"timeout": 5}
        second_id, second = make_trace(4)
        exporter._reset()  # as if Zipkin had answered something in between
        exporter.export(second)  # the answer times out: spooled as "maybe stored"
        front.delay_s = 0.0  # answers in time again: the resend arrives and is counted
        assert wait_for(lambda: exporter.spool.oldest() is None, timeout=30)
        exporter.shutdown()
    assert exporter.counters["maybe_duplicated"] == 4
    assert len(front.bodies) == 2 * (1 + MAX_UNCERTAIN)
    stored = zipkin.client().wait_for_trace(second_id, lambda s: len(s) >= 4, timeout=20)
    assert len(stored) <= 4 * (1 + MAX_UNCERTAIN)
    assert zipkin.client().wait_for_trace(trace_id, timeout=20)  # at least once


def test_stale_partial_spool_files_are_removed_at_start(tmp_path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = spool_dir / f"{time.time_ns():020d}-{dead_pid}-000001.json.tmp"
    old = spool_dir / f"{time.time_ns():020d}-1-000001.json.tmp"
    fresh = spool_dir / f"{time.time_ns():020d}-1-000002.json.tmp"  # a live writer's
    for path in (stale, old, fresh):
        path.write_bytes(b"[")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    Spool(spool_dir, 1 << 20)
    assert sorted(p.name for p in spool_dir.iterdir()) == [fresh.name]


def test_a_full_disk_leaves_no_partial_spool_file(tmp_path, monkeypatch, refused_endpoint) -> None:
    from cosyvoice_otel.sdk import spool as spool_module

    exporter = zipkin_exporter(endpoint=refused_endpoint, spool_dir=str(tmp_path))
    real_fdopen = os.fdopen

    class HalfThenFull:
        def __init__(self, f) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    monkeypatch.setattr(spool_module.os, "fdopen", lambda fd, mode: HalfThenFull(
        real_fdopen(fd, mode)))
    _, spans = make_trace(3)
    assert exporter.export(spans).name == "FAILURE"
    monkeypatch.undo()
    assert list(tmp_path.rglob("*.tmp")) == [] and list(tmp_path.rglob("*.json")) == []
    assert exporter.dropped == {"disk_full": 3}  # the disk refused it, not the cap
    exporter.shutdown()


def test_spool_replays_oldest_first(zipkin, tmp_path, refused_endpoint) -> None:
    exporter = zipkin_exporter(endpoint=refused_endpoint, spool_dir=str(tmp_path))
    ids = []
    for _ in range(3):
        trace_id, spans = make_trace(1)
        ids.append(trace_id)
        exporter.spool.put(exporter.encode(spans))
    with ZipkinFront(zipkin.endpoint) as front:
        exporter.endpoint = front.endpoint
        assert exporter.replay() == 3
    sent = [json.loads(body)[0]["traceId"] for body in front.bodies]
    assert sent == ids
    exporter.shutdown()


def test_one_timeout_opens_the_circuit_for_the_batches_behind_it(tmp_path) -> None:
    """A black-holed Zipkin costs the export thread ONE timeout; the next batches go straight
    to the spool while the circuit is open."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    try:
        exporter = zipkin_exporter(
            endpoint=f"http://127.0.0.1:{hole.getsockname()[1]}/api/v2/spans", timeout=1,
            spool_dir=str(tmp_path))
        posts = []
        real_post = exporter._post
        exporter._post = lambda payload: posts.append(payload) or real_post(payload)
        for _ in range(5):
            exporter.export(make_trace(1)[1])
        assert exporter.counters["spooled"] == 5
        assert len(posts) == 1  # one attempt (one timeout), not five
        exporter._closed = True
    finally:
        hole.close()
