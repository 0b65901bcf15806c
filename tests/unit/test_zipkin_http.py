"""The Zipkin HTTP exporter's decisions, fast and in memory: a scripted HTTP stub answers each
POST (status, delay), so every branch is exercised without the JVM. What Zipkin itself does
with the result is checked against the real server in e2e/test_export_resilience.py.

The rule under test: "Zipkin is away" (no connection, 502/503/504, 408/429, an answer no batch
could cause) spools and retries; "Zipkin refuses THIS batch" (400, 413, 422, a 500 the halves
do not share) bisects, delivers the rest, drops and counts the refused spans. No batch can
block the ones behind it."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cosyvoice_otel.sdk import export_base
from cosyvoice_otel.sdk import spool as sp
from cosyvoice_otel.sdk import zipkin_http as zh
from cosyvoice_otel.sdk.spool import MAX_FILE_FAILURES, Spool
from cosyvoice_otel.sdk.zipkin_http import MAX_SUSPECTS, MAX_UNCERTAIN, ResilientZipkinExporter

from ..support.helpers import FakeClock, fake_monotonic
from ..support.loopback_server import LoopbackServer, QuietHandler
from ..support.tracing import finished_spans


class Stub(LoopbackServer):
    """Answers POSTs with ``status(body)`` after ``delay`` seconds; keeps every body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.content_types: list[str | None] = []
        self.status = lambda body: 202
        self.delay = 0.0
        stub = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.bodies.append(body)
                stub.content_types.append(self.headers.get("Content-Type"))
                time.sleep(stub.delay)
                code = stub.status(body)
                try:
                    self.reply(code, b"nope")
                except OSError:
                    pass

        super().__init__(Handler, "/api/v2/spans")

    def spans(self) -> list[dict]:
        return [span for body in self.bodies for span in json.loads(body)]


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


def spans(count: int, size: int = 50) -> list:
    return finished_spans(count, size)


def make(endpoint: str, tmp_path: Path, **kwargs) -> ResilientZipkinExporter:
    return ResilientZipkinExporter(endpoint=endpoint, spool_dir=str(tmp_path), timeout=kwargs.pop(
        "timeout", 2), spool_max_bytes=kwargs.pop("spool_max_bytes", 64 << 20), **kwargs)


def table_built() -> ResilientZipkinExporter:
    """What the configurator builds for ``--exporter zipkin`` from the settings (os.environ)."""
    from cosyvoice_otel.sdk.configurator import build_exporter
    from cosyvoice_otel.settings import EXPORTERS_BY_NAME, Settings

    built = build_exporter(EXPORTERS_BY_NAME["zipkin"], Settings.resolve(environ=os.environ))
    assert isinstance(built, ResilientZipkinExporter)
    return built


def hex_id(span) -> bytes:
    """A span's trace id as it appears in the encoded JSON."""
    return f"{span.context.trace_id:032x}".encode()


def away_line(endpoint: str, why: str) -> str:
    """The exporter's one line (per streak) when Zipkin stops taking spans."""
    return (f"cosyvoice-otel: Zipkin at {endpoint} is not taking spans ({why}); batches wait "
            "in the spool and are replayed when it does")


def test_a_sent_batch_is_counted_and_has_no_debug_flag(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    assert exporter.export(spans(3)).name == "SUCCESS"
    assert exporter.counters["sent"] == 3 and len(stub.bodies) == 1
    assert all("debug" not in span for span in stub.spans())
    assert exporter.export([]).name == "SUCCESS" and len(stub.bodies) == 1


@pytest.mark.parametrize(("status", "outcome"), [
    (200, "sent"), (202, "sent"), (299, "sent"),
    # about the batch's content: bisected, the refused spans dropped
    (400, "refused"), (413, "refused"), (422, "refused"), (500, "refused"), (501, "refused"),
    (507, "refused"),
    # about Zipkin (not now, or not at this URL): spooled and retried
    (502, "away"), (503, "away"), (504, "away"), (408, "away"), (429, "away"), (401, "away"),
    (403, "away"), (404, "away"), (405, "away"), (409, "away"), (302, "away"), (300, "away")])
def test_status_table(stub, tmp_path, status, outcome) -> None:
    assert zh.classify(status) == outcome
    stub.status = lambda body: status
    answer = make(stub.endpoint, tmp_path)._post(b"[]")
    assert (answer.outcome, answer.status) == (outcome, status)
    assert answer.detail == ("" if outcome == "sent" else "nope")


def test_a_413_splits_down_to_single_spans_and_drops_only_the_one_too_big(stub, tmp_path,
                                                                         caplog) -> None:
    batch = spans(7)
    big = spans(1, size=5000)[0]
    batch.insert(3, big)
    stub.status = lambda body: 413 if len(body) > 2000 else 202
    exporter = make(stub.endpoint, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(batch).name == "SUCCESS"
    sent = [s["name"] for s in stub.spans() if len(json.dumps(s)) < 2000]
    assert sorted(set(sent)) == sorted(s.name for s in batch if s is not big)
    assert exporter.counters["sent"] == 7 and exporter.dropped == {"too_large": 1}
    assert exporter.counters["split"] >= 2
    assert len([r for r in caplog.records if "dropped 1 spans" in r.getMessage()]) == 1
    assert exporter.spool.oldest() is None


def test_when_zipkin_goes_away_mid_split_the_rest_is_spooled_not_lost(stub, tmp_path) -> None:
    calls = []

    def status(body: bytes) -> int:
        calls.append(len(json.loads(body)))
        return 413 if len(calls) == 1 else 503

    stub.status = status
    exporter = make(stub.endpoint, tmp_path)
    assert exporter.export(spans(8)).name == "SUCCESS"
    assert calls == [8, 4]  # the second half is not tried once Zipkin is away
    assert exporter.counters["spooled"] == 8
    spooled = [json.loads(p.read_bytes()) for p in sorted(exporter.spool.directory.glob("*.json"))]
    assert [len(part) for part in spooled] == [4, 4]


def test_rejections_are_bisected_to_single_spans_dropped_with_one_log_line(stub, tmp_path,
                                                                            caplog) -> None:
    stub.status = lambda body: 400
    exporter = make(stub.endpoint, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(spans(2)).name == "SUCCESS"
    assert exporter.dropped == {"rejected": 2} and exporter.spool.oldest() is None
    assert [len(json.loads(body)) for body in stub.bodies] == [2, 1, 1]
    assert [r.getMessage() for r in caplog.records] == [
        "cosyvoice-otel: dropped 1 spans: Zipkin refused them alone (HTTP 400: nope)"]


def trace_of(span: dict) -> str:
    return span["traceId"]


def test_a_500_for_one_traces_spans_drops_those_and_delivers_the_rest(stub, tmp_path) -> None:
    """The issue's reproduction: Zipkin's storage refuses one trace (an Elasticsearch mapping
    conflict on one tag value), 500 for every body holding it. Tracing goes on."""
    batch = spans(12)
    poison = f"{batch[5].context.trace_id:032x}"
    stub.status = lambda body: 500 if poison.encode() in body else 202
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    assert exporter.export(batch).name == "SUCCESS"
    delivered = {s["id"] for body in stub.bodies if poison.encode() not in body
                 for s in json.loads(body)}
    assert len(delivered) == 11 and exporter.counters["sent"] == 11
    assert exporter.dropped == {"rejected": 1}
    assert exporter.spool.oldest() is None and not exporter._circuit_open()
    later = spans(10)  # ten later requests arrive as if nothing happened
    for span in later:
        assert exporter.export([span]).name == "SUCCESS"
    assert exporter.counters["sent"] == 21


def test_a_500_the_halves_share_is_zipkin_away_not_the_batch(stub, tmp_path, caplog) -> None:
    """Storage down: every body gets 500. Three posts (the batch, its two halves), then the
    batch waits in the spool whole, nothing dropped, the circuit open, the 500 named."""
    stub.status = lambda body: 500
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(spans(64)).name == "SUCCESS"
    assert [r.getMessage() for r in caplog.records] == [
        away_line(stub.endpoint, "HTTP 500")]
    assert [len(json.loads(body)) for body in stub.bodies] == [64, 32, 32]
    assert exporter.dropped == {} and exporter.counters["spooled"] == 64
    assert exporter._circuit_open() and len(exporter.spool.files()) == 1


def test_a_lone_span_with_a_500_is_kept_for_later_not_dropped(stub, tmp_path) -> None:
    stub.status = lambda body: 500
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.export(spans(1))
    assert exporter.dropped == {} and exporter.counters["spooled"] == 1


def test_a_4xx_half_is_evidence_zipkin_works_so_a_500_half_is_bisected(stub, tmp_path) -> None:
    batch = spans(4)
    bad = f"{batch[3].context.span_id:016x}"
    # the first half is refused for its content (400), the second holds a 500-poison span
    stub.status = lambda body: 500 if bad.encode() in body else (
        400 if len(json.loads(body)) == 2 else 202)
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.export(batch)
    assert exporter.counters["sent"] == 3 and exporter.dropped == {"rejected": 1}
    assert exporter.spool.oldest() is None


def test_a_413_proxy_gives_a_few_log_lines_and_every_span_counted(stub, tmp_path,
                                                                   caplog) -> None:
    """A proxy with a small client_max_body_size: every span is too large alone."""
    from cosyvoice_otel.sdk.health import TracerHealth
    from cosyvoice_otel.sdk.redaction import RedactingSpanExporter

    stub.status = lambda body: 413
    exporter = make(stub.endpoint, tmp_path)
    health = TracerHealth([RedactingSpanExporter(exporter)])
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        for _ in range(5):
            exporter.export(spans(63))
    assert exporter.dropped == {"too_large": 315} and exporter.counters["sent"] == 0
    assert len(caplog.records) <= 2
    totals = health.totals()
    assert totals["dropped.too_large"] == 315 and totals["exported"] == 0


def test_the_spool_is_private_to_the_user(refused_endpoint, tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.export(spans(1))
    (path,) = exporter.spool.files()
    assert path.stat().st_mode & 0o777 == 0o600
    assert exporter.spool.directory.stat().st_mode & 0o777 == 0o700
    assert tmp_path.stat().st_mode & 0o077 != 0 or True  # the given root is the user's own


def test_a_missing_spool_root_is_created_private_too(refused_endpoint, tmp_path) -> None:
    root = tmp_path / "a" / "b"
    exporter = make(refused_endpoint, root)
    for folder in (tmp_path / "a", root, exporter.spool.directory):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def poisoned_spool(stub, tmp_path, files: int = 3):
    """A spool holding one batch of a trace Zipkin refuses (500) and ``files`` good ones."""
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    poison = spans(2)
    marker = hex_id(poison[0])
    stub.status = lambda body: 500 if marker in body else 202
    exporter.spool.put(exporter.encode(poison[:1]))  # alone in its file: no half can tell
    for _ in range(files):
        exporter.spool.put(exporter.encode(spans(1)))
    return exporter


def test_replay_passes_over_a_failing_file_and_sets_it_aside_after_bounded_tries(
        stub, tmp_path, caplog) -> None:
    exporter = poisoned_spool(stub, tmp_path)
    assert exporter.replay() == 3  # the three good files behind the bad one go through
    (bad,) = exporter.spool.files()
    rounds = 0
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        while exporter.spool.files() and rounds < 10:
            exporter.export(spans(1))  # live traffic Zipkin takes: evidence it works
            exporter._reset()
            exporter.replay()
            rounds += 1
    assert rounds == MAX_FILE_FAILURES
    assert exporter.dropped == {"rejected": 1} and exporter.spool.size == 0
    assert [p.name[:20] for p in (exporter.spool.directory / "bad").iterdir()] == [bad.name[:20]]
    assert any("refused them alone" in r.getMessage() for r in caplog.records)


def poisoned_batch(stub, tmp_path, tries: int = 0):
    """One spooled batch of six one-span traces, two of which Zipkin refuses (500): one in
    each half, so the halves share the 500 and the file fails whole. Returned after the tries
    before its last (Zipkin took other batches meanwhile), with the batch."""
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    batch = spans(6)
    poison = {hex_id(batch[0]), hex_id(batch[5])}
    stub.status = lambda body: 500 if any(p in body for p in poison) else 202
    exporter.spool.put(exporter.encode(batch), tries)
    for _ in range(MAX_FILE_FAILURES):
        exporter.replay()
        exporter._sent_batches += 1  # the live path got batches through meanwhile
    return exporter, batch


def test_a_failing_file_is_bisected_at_last_so_its_good_spans_still_arrive(stub,
                                                                           tmp_path) -> None:
    """Two refused traces, one in each half of a spooled batch: the halves share the 500. Once
    Zipkin has taken other batches meanwhile, the last try bisects to the end."""
    exporter, batch = poisoned_batch(stub, tmp_path)
    exporter.replay()  # the last try
    assert exporter.spool.size == 0
    assert exporter.dropped == {"rejected": 2} and exporter.counters["sent"] == 4
    assert exporter.counters["replayed"] == 4  # the good spans, replayed from the spool
    (copy,) = (exporter.spool.directory / "bad").iterdir()  # the whole batch, for a look
    assert copy.read_bytes() == exporter.encode(batch)


@pytest.mark.parametrize(("traces", "expected"), [
    (["a", "a", "b", "b"], (["a", "a"], ["b", "b"])),
    (["a", "b", "b", "b"], (["a"], ["b", "b", "b"])),
    (["a", "a", "a", "b"], (["a", "a", "a"], ["b"])),  # a trace is never cut while others exist
    (["a", "a", "a", "a"], (["a", "a"], ["a", "a"])),  # one trace: by count
    (["a", "b", "a", "c"], (["a", "a"], ["b", "c"])),
])
def test_halves_keep_a_traces_spans_together(traces, expected) -> None:
    first, second = zh.halves([{"traceId": t} for t in traces])
    assert ([s["traceId"] for s in first], [s["traceId"] for s in second]) == expected


def test_a_failing_file_counts_only_when_zipkin_took_other_batches_since(stub,
                                                                         tmp_path) -> None:
    exporter = poisoned_spool(stub, tmp_path, files=0)
    for _ in range(MAX_FILE_FAILURES + 2):  # nothing else got through: no evidence
        exporter._reset()
        exporter.replay()
    (path,) = exporter.spool.files()
    assert Spool.fails(path) == 0 and exporter.dropped == {}


def test_replay_stops_after_a_few_files_failing_alike(stub, tmp_path, caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    for _ in range(MAX_SUSPECTS + 3):
        exporter.spool.put(exporter.encode(spans(1)))
    stub.status = lambda body: 500
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.replay() == 0
    assert [r.getMessage() for r in caplog.records] == [  # said once, with why
        away_line(stub.endpoint, "HTTP 5xx for every batch replayed")]
    assert len(stub.bodies) == MAX_SUSPECTS  # not one post per file: Zipkin is in trouble
    assert exporter.dropped == {}


def test_the_live_path_flows_while_a_poisoned_backlog_is_replayed(stub, tmp_path) -> None:
    exporter = poisoned_spool(stub, tmp_path, files=2)
    exporter._start_replayer = ResilientZipkinExporter._start_replayer.__get__(exporter)
    exporter._backoff = 0.05
    deadline = time.monotonic() + 20
    while (exporter.spool.files() or exporter.dropped["rejected"] < 1) and \
            time.monotonic() < deadline:
        exporter.export(spans(1))  # the app goes on exporting
        time.sleep(0.02)
    assert exporter.dropped == {"rejected": 1} and not exporter.spool.files()
    assert exporter.counters["replayed"] == 2  # the live sends meanwhile are not "replayed"
    assert exporter.counters["spooled"] == 0  # no live batch waited behind the bad file


def test_a_spool_file_over_the_bound_is_set_aside_unread(stub, tmp_path, monkeypatch,
                                                         caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(exporter.encode(spans(3)))
    exporter.spool.put(exporter.encode(spans(1)))
    big = exporter.spool.oldest()
    monkeypatch.setattr(sp, "MAX_FILE_BYTES", big.stat().st_size - 1)
    read = []
    real = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.replay()
    assert big.name not in read  # never read whole
    assert exporter.dropped == {"spool_unreadable": 3} and len(stub.bodies) == 1
    # the line says where the file went, so the operator can look at it
    assert f"(moved to {exporter.spool.directory / 'bad'})" in caplog.text


@pytest.mark.parametrize("chunk", [1, 5, 9, 10, 4096])
def test_spans_in_a_file_are_counted_in_bounded_chunks(tmp_path, monkeypatch, chunk) -> None:
    payload = json.dumps([{"traceId": "a" * 32, "id": str(i)} for i in range(37)]).encode()
    path = tmp_path / "f.json"
    path.write_bytes(payload)
    real_open = Path.open

    class Chunked:
        def __init__(self, f):
            self.f = f

        def read(self, n):
            return self.f.read(min(n, chunk))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(Path, "open", lambda self, mode="r": Chunked(real_open(self, mode)))
    assert Spool(tmp_path / "s", 1000).count_spans(path) == 37


def test_refused_spools_trips_the_circuit_and_replays_oldest_first(stub, refused_endpoint,
                                                                  tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._start_replayer = lambda: None  # replay by hand below
    first, second = spans(1), spans(2)
    assert exporter.export(first).name == "SUCCESS"
    assert exporter._circuit_open() and exporter._backoff == 2.0
    assert exporter.export(second).name == "SUCCESS"  # straight to the spool: circuit open
    assert exporter.counters["spooled"] == 3 and exporter.counters["sent"] == 0
    assert exporter.counters["failures"] == 2  # one per batch not delivered at once
    exporter.endpoint = stub.endpoint
    assert exporter.replay(budget=1) == 1
    assert [s["name"] for s in stub.spans()] == ["s0"]
    assert exporter.replay() == 1
    assert [s["name"] for s in stub.spans()] == ["s0", "s0", "s1"]
    assert exporter.counters["replayed"] == 3 and exporter.counters["sent"] == 3
    assert exporter.spool.size == 0 and not exporter._circuit_open()


def test_backoff_doubles_to_its_cap_and_resets_on_success(stub, refused_endpoint, tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    backoffs = []
    for _ in range(8):
        exporter._trip("a test")
        backoffs.append(exporter._backoff)
    assert backoffs == [2, 4, 8, 16, 30, 30, 30, 30]
    exporter._reset()
    assert exporter._backoff == 1.0 and not exporter._circuit_open()


def test_a_timed_out_answer_is_resent_once_then_dropped(stub, tmp_path) -> None:
    stub.delay = 3.0  # late, however busy the machine
    exporter = make(stub.endpoint, tmp_path, timeout=1.0)
    exporter._start_replayer = lambda: None
    exporter.export(spans(2))
    (path,) = exporter.spool.directory.glob("*.json")
    assert Spool.tries(path) == 1 and path.name.endswith(".u1.json")
    exporter._reset()
    assert exporter.replay() == 1  # answered late again: dropped for good
    assert exporter.spool.oldest() is None and exporter.dropped == {"timeout": 2}
    assert len(stub.bodies) == 1 + MAX_UNCERTAIN


def test_a_resend_after_a_timeout_is_counted_as_maybe_duplicated(stub, tmp_path) -> None:
    stub.delay = 3.0  # late, however busy the machine
    exporter = make(stub.endpoint, tmp_path, timeout=1.0)
    exporter._start_replayer = lambda: None
    exporter.export(spans(3))
    stub.delay = 0.0
    exporter._reset()
    assert exporter.replay() == 1
    assert exporter.counters["maybe_duplicated"] == 3 and exporter.counters["replayed"] == 3


def test_replay_sets_aside_unreadable_files_and_goes_on(stub, tmp_path, caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(b"{broken")
    exporter.spool.put(b'{"a": 1}')  # JSON, but not a list of spans
    exporter.spool.put(exporter.encode(spans(1)))
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.replay() == 1
    bad = sorted(p.name for p in (exporter.spool.directory / "bad").iterdir())
    assert len(bad) == 2 and exporter.dropped == {"spool_unreadable": 0}  # no span in them
    assert exporter.spool.size == 0 and len(stub.bodies) == 1
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1  # one streak


def test_replay_of_a_split_file_keeps_the_unsent_part_in_its_place(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(exporter.encode(spans(4)))
    exporter.spool.put(exporter.encode(spans(1)))
    answers = iter([413, 202, 503])
    stub.status = lambda body: next(answers)
    assert exporter.replay() == 0
    parts = sorted(p.name for p in exporter.spool.directory.glob("*.json"))
    assert len(parts) == 2 and "-p0" in parts[0]  # the unsent half, still before the next file
    assert len(json.loads((exporter.spool.directory / parts[0]).read_bytes())) == 2
    assert exporter.counters["replayed"] == 2


def test_spool_cap_drops_counts_and_logs_at_most_once_a_minute(refused_endpoint, tmp_path,
                                                              caplog) -> None:
    exporter = make(refused_endpoint, tmp_path, spool_max_bytes=3000)
    exporter._start_replayer = lambda: None
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        results = [exporter.export(spans(3)).name for _ in range(10)]
    assert "FAILURE" in results and results[0] == "SUCCESS"
    assert exporter.spool.size <= 3000
    assert exporter.counters["spooled"] + exporter.dropped["spool_cap"] == 30
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1
    assert drops[0].startswith("cosyvoice-otel: dropped ") and drops[0].endswith(
        " spans: Zipkin away and the spool full")


def test_a_raising_transport_is_one_warning_and_a_drop(tmp_path, caplog) -> None:
    class Exploding:
        def post(self, *args, **kwargs):
            raise RuntimeError("bug")

        def close(self) -> None:
            pass

    exporter = make("http://127.0.0.1:9/x", tmp_path, session=Exploding())
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(spans(2)).name == "FAILURE"
    assert exporter.dropped == {"export_error": 2}
    assert any("export failed (RuntimeError: bug)" in r.getMessage() for r in caplog.records)


def test_after_shutdown_nothing_is_exported(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.shutdown()
    exporter.shutdown()  # twice is fine
    assert exporter.export(spans(1)).name == "FAILURE" and stub.bodies == []


def test_force_flush_replays_what_is_spooled(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(exporter.encode(spans(2)))
    exporter.spool.put(exporter.encode(spans(1)))
    assert exporter.force_flush(5000) is True
    assert exporter.spool.oldest() is None and len(stub.bodies) == 2


def test_one_spool_per_endpoint_and_the_env_defaults(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://z:1/api/v2/spans")
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_TIMEOUT", "7")
    monkeypatch.setenv("COSYVOICE_TRACED_SPOOL_DIR", str(tmp_path))
    monkeypatch.setenv("COSYVOICE_TRACED_SPOOL_MAX_MB", "0.5")
    a = table_built()
    monkeypatch.setenv("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "http://other:1/api/v2/spans")
    b = table_built()
    assert a.endpoint == "http://z:1/api/v2/spans" and a.timeout == 7.0
    assert a.spool.max_bytes == 512 * 1024
    assert a.spool.directory.parent == tmp_path and a.spool.directory != b.spool.directory


def test_an_unusable_spool_directory_is_a_warning_not_a_crash(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter = make("http://127.0.0.1:9/x", blocker)
    assert exporter.spool is None
    (line,) = [r.getMessage() for r in caplog.records]
    # the operator's line: which folder, why, and what it means for the batches
    assert line.startswith(f"cosyvoice-otel: spool {blocker} unusable (")
    assert "Errno" in line and line.endswith(
        "); batches will be dropped while Zipkin is away")
    assert exporter.replay() == 0


def test_spool_sizes_follow_put_remove_and_set_aside(tmp_path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.put(b"x" * 60) and spool.size == 60
    assert not spool.put(b"y" * 41) and spool.size == 60  # over the cap: refused_endpoint
    assert spool.put(b"y" * 40) and spool.size == 100
    first = spool.oldest()
    spool.set_aside(first)
    assert spool.size == 40 and (tmp_path / "bad" / first.name).exists()
    spool.remove(spool.oldest())
    assert spool.size == 0 and spool.oldest() is None
    spool.remove(tmp_path / "gone.json")  # already gone: no error
    again = Spool(tmp_path, max_bytes=100)
    assert again.size == 0


def test_spool_file_names_sort_oldest_first_and_carry_their_tries(tmp_path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.put(b"[1]")
    spool.put(b"[2]", tries=1)
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names[0].endswith(f"-{os.getpid()}-000001.json")
    assert names[1].endswith(f"-{os.getpid()}-000002.u1.json")
    assert [Spool.tries(tmp_path / n) for n in names] == [0, 1]
    assert Spool.tries(tmp_path / "garbage.json") == 0


def test_a_dead_writers_tmp_is_removed_a_live_ones_fresh_tmp_kept(tmp_path) -> None:
    live = tmp_path / f"{time.time_ns():020d}-1-000001.json.tmp"
    own = tmp_path / f"{time.time_ns():020d}-{os.getpid()}-000001.json.tmp"
    odd = tmp_path / "odd-name.json.tmp"
    for path in (live, own, odd):
        path.write_bytes(b"[")
    Spool(tmp_path, 1000)
    assert [p.name for p in tmp_path.glob("*.tmp")] == [live.name]
    assert sp.pid_alive(os.getpid()) and sp.pid_alive(1)


def test_the_replayer_thread_waits_for_the_circuit_then_empties_the_spool(stub, refused_endpoint,
                                                                          tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._backoff = 0.3  # a short first circuit: the test need not wait the usual 1 s
    exporter.export(spans(2))
    replayer = exporter._replayer
    assert replayer.name == "cosyvoice-otel-spool" and replayer.daemon and replayer.is_alive()
    reopens_at = exporter._open_until
    exporter.endpoint = stub.endpoint  # Zipkin is back; the circuit is still open for ~1 s
    deadline = time.monotonic() + 10
    while exporter.spool.oldest() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    sent_at = time.monotonic()
    assert exporter.spool.oldest() is None and len(stub.bodies) == 1
    assert sent_at >= reopens_at  # nothing was tried while the circuit was open
    replayer.join(5)
    assert not replayer.is_alive()  # the loop ends when the spool is empty
    exporter.shutdown()


def test_a_closed_exporter_stops_replaying(stub, refused_endpoint, tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._backoff = 0.2
    exporter.export(spans(1))
    exporter._closed = True
    exporter._replayer.join(5)
    assert not exporter._replayer.is_alive() and exporter.spool.oldest() is not None


def test_force_flush_keeps_to_its_deadline_one_file_at_a_time(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    for _ in range(3):
        exporter.spool.put(exporter.encode(spans(1)))
    stub.delay = 0.3
    assert exporter.force_flush(200) is True
    assert len(stub.bodies) == 1  # its deadline passed during the first: no second file
    stub.delay = 0.0
    assert exporter.force_flush(5000) and len(stub.bodies) == 3


def test_force_flush_stops_when_zipkin_is_away(refused_endpoint, tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.spool.put(exporter.encode(spans(1)))
    exporter.spool.put(exporter.encode(spans(1)))
    posts = []
    real_post = exporter._post
    exporter._post = lambda payload: posts.append(payload) or real_post(payload)
    assert exporter.force_flush(10_000) is True
    assert len(posts) == 1 and len(exporter.spool.files()) == 2  # away: it stopped at once


def test_a_dead_pid_is_not_alive(tmp_path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert sp.pid_alive(int(done.stdout)) is False


def test_replacing_a_spool_file_names_its_parts_after_it(tmp_path) -> None:
    spool = Spool(tmp_path, 10_000)
    odd = tmp_path / "odd.json"
    odd.write_bytes(b"[1]")
    spool.size += 3
    spool.replace(odd, [(b"[2]", 0), (b"[3]", 1)])
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["odd-p0.json", "odd-p1.u1.json"]
    assert spool.size == 6
    spool.put(b"[4]")
    (named,) = [p for p in tmp_path.glob("*.json") if p.name[0].isdigit()]
    spool.replace(named, [(b"[5]", 0)])
    assert (tmp_path / (named.name[:-5] + "-p0.json")).read_bytes() == b"[5]"
    tried = tmp_path / "00000000000000000001-7-000001.u2.json"  # a file resent before
    tried.write_bytes(b"[6,7]")
    spool.replace(tried, [(b"[6]", 2), (b"[7]", 0)])  # the parts: the stem, their own tries
    assert {"00000000000000000001-7-000001-p0.u2.json",
            "00000000000000000001-7-000001-p1.json"} <= {p.name for p in spool.files()}


def test_setting_aside_the_last_file_empties_the_size_and_a_blocked_bad_dir_removes_it(
        tmp_path) -> None:
    spool = Spool(tmp_path / "a", 10_000)
    spool.put(b"[1]")
    spool.set_aside(spool.oldest())
    assert spool.size == 0
    other = Spool(tmp_path / "b", 10_000)
    (other.directory / "bad").write_text("a file where the folder would go")
    other.put(b"[1]")
    other.set_aside(other.oldest())
    assert other.oldest() is None and other.size == 0



def test_defaults_without_configuration(tmp_path, monkeypatch) -> None:
    for name in ("OTEL_EXPORTER_ZIPKIN_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_TIMEOUT",
                 "COSYVOICE_TRACED_SPOOL_DIR", "COSYVOICE_TRACED_SPOOL_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    exporter = table_built()
    assert exporter.endpoint == "http://localhost:9411/api/v2/spans" and exporter.timeout == 5.0
    assert exporter.spool.max_bytes == 64 * 1024 * 1024
    import hashlib

    digest = hashlib.sha1(exporter.endpoint.encode()).hexdigest()[:12]
    assert exporter.spool.directory == tmp_path / ".cache" / "cosyvoice-otel" / "spool" / digest
    assert exporter.counters == {"sent": 0, "spooled": 0, "replayed": 0, "failures": 0,
                                 "split": 0, "maybe_duplicated": 0}
    assert exporter.dropped == {}
    assert not exporter._circuit_open() and exporter._open_until == 0.0


def test_batches_are_posted_as_json(stub, tmp_path) -> None:
    make(stub.endpoint, tmp_path).export(spans(1))
    assert stub.content_types == ["application/json"]


def test_counters_accumulate(stub, tmp_path) -> None:
    stub.status = lambda body: 400
    exporter = make(stub.endpoint, tmp_path)
    exporter.export(spans(2))
    exporter.export(spans(3))
    assert exporter.dropped["rejected"] == 5
    split_before = exporter.counters["split"]
    stub.status = lambda body: 413 if len(json.loads(body)) > 2 else 202
    exporter.export(spans(4))  # one split: 2 + 2
    assert exporter.counters["split"] == split_before + 1 and exporter.counters["sent"] == 4
    stub.status = lambda body: 413
    exporter.export(spans(1))
    exporter.export(spans(1))
    assert exporter.dropped["too_large"] == 2


def test_a_batch_spooled_while_the_circuit_is_open_is_not_marked_uncertain(refused_endpoint,
                                                                          tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.export(spans(1))  # refused_endpoint: trips the circuit
    exporter.export(spans(1))  # circuit open: straight to the spool
    names = [p.name for p in exporter.spool.directory.glob("*.json")]
    assert len(names) == 2 and not any(".u" in name for name in names)


def test_a_successful_send_starts_the_replayer_only_when_something_is_spooled(stub,
                                                                             tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.export(spans(1))
    assert exporter._replayer is None  # nothing spooled: no thread
    exporter.spool.put(exporter.encode(spans(1)))
    exporter.export(spans(1))
    assert exporter._replayer is not None
    exporter._replayer.join(5)
    assert exporter.spool.oldest() is None and len(stub.bodies) == 3


def test_a_file_another_process_replayed_is_skipped_not_a_stop(stub, tmp_path,
                                                              monkeypatch) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(exporter.encode(spans(1)))
    exporter.spool.put(exporter.encode(spans(2)))
    first = exporter.spool.oldest()
    real_read = exporter.spool.read

    def vanishing(path: Path) -> bytes:
        if path == first:
            first.unlink()  # taken by another process just now
        return real_read(path)

    monkeypatch.setattr(exporter.spool, "read", vanishing)
    exporter.replay()
    assert len(stub.bodies) == 1 and len(json.loads(stub.bodies[0])) == 2


def test_an_unreadable_file_is_logged_with_why(stub, tmp_path, caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter.spool.put(b'{"a": 1}')
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.replay()
    assert "(not a JSON list of spans)" in caplog.text


# ------------------------------------------------------------ pipelined (what the SDK path uses)

def test_pipelined_batches_arrive_in_order_and_flush_waits_for_the_last(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path, pipelined=True)
    batches = [spans(2) for _ in range(6)]
    for batch in batches:
        assert exporter.export(batch).name == "SUCCESS"
    assert exporter.force_flush(5000)
    assert exporter.counters["sent"] == 12 and len(stub.bodies) == 6
    sent_ids = [s["id"] for body in stub.bodies for s in json.loads(body)]
    assert sent_ids == [f"{sp.context.span_id:016x}" for batch in batches for sp in batch]
    exporter.shutdown()
    assert exporter.export(spans(1)).name == "FAILURE"


def test_pipelined_with_zipkin_away_spools_in_the_sender(refused_endpoint, tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path, pipelined=True)
    exporter._start_replayer = lambda: None
    exporter.export(spans(3))
    exporter.export(spans(2))
    exporter.force_flush(5000)
    assert exporter.counters["spooled"] == 5 and exporter.counters["failures"] == 2
    exporter.shutdown()


def test_pipelined_export_holds_at_most_two_batches(tmp_path) -> None:
    """One in flight, one waiting: a third export() waits (the SDK's own queue buffers)."""
    release = threading.Event()
    posted: list[int] = []

    class SlowSession:
        def post(self, url, data, **kwargs):
            release.wait(10)
            posted.append(data.count(b'"traceId"'))
            return type("R", (), {"status_code": 202, "text": ""})()

        def close(self) -> None:
            pass

    exporter = make("http://127.0.0.1:9/x", tmp_path, pipelined=True, session=SlowSession())
    exporter.export(spans(1))  # taken by the sender, stuck in its post
    deadline = __import__("time").monotonic() + 5
    while exporter._outbox.qsize() and __import__("time").monotonic() < deadline:
        pass
    exporter.export(spans(2))  # waits in the outbox
    third = threading.Thread(target=exporter.export, args=(spans(3),))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # blocked: nothing more is held in memory
    release.set()
    third.join(5)
    exporter.force_flush(5000)
    assert posted == [1, 2, 3]
    exporter.shutdown()


# ------------------------------------ what the operator reads, and the replay's bookkeeping

def test_away_and_back_are_one_line_each_per_streak_naming_zipkin(stub, tmp_path, caplog,
                                                                  monkeypatch) -> None:
    clock = fake_monotonic(monkeypatch, export_base)  # the streak log's clock
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    away = away_line(stub.endpoint, "HTTP 503")
    back = f"cosyvoice-otel: Zipkin at {stub.endpoint} takes spans again"

    def send() -> None:
        exporter._open_until = 0.0  # the circuit's wait, skipped: each export posts
        exporter.export(spans(1))

    stub.status = lambda body: 503
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        send()
        send()  # the same streak: no line
        clock.now += 61
        send()  # a minute on: one line again, and no span count (an outage has none)
        stub.status = lambda body: 202
        send()
        clock.now += 61
        send()  # still fine: nothing to say
    assert [r.getMessage() for r in caplog.records] == [away, away, back]


def test_replay_rounds_that_settle_nothing_back_off_doubling_and_one_that_does_resets(
        tmp_path, refused_endpoint, monkeypatch) -> None:
    """The replayer thread's pacing, on a fake clock: the circuit's wait first, then 0.05 s
    between rounds that settle files, and a doubling wait (to MAX_BACKOFF) after rounds that
    settle none (files failing for now), reset by a round that settles one."""
    exporter = make(refused_endpoint, tmp_path)
    exporter.spool.put(exporter.encode(spans(1)))  # something waits: the loop runs
    clock = FakeClock(1000.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(zh, "time", types.SimpleNamespace(monotonic=clock.monotonic,
                                                          sleep=sleep))
    exporter._open_until = clock.now + 3.0  # Zipkin was away: the circuit's wait comes first
    settled = [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    budgets = []

    def replay(budget=None) -> int:
        budgets.append(budget)
        if len(budgets) == len(settled):
            exporter._closed = True
        return settled[len(budgets) - 1]

    exporter.replay = replay
    exporter._replay_loop()
    assert budgets == [20] * len(settled)  # a bounded round: the lock is not held for long
    assert slept == [3.0, 1.0, 2.0, 4.0, 0.05, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


@pytest.mark.parametrize(("remembered", "oldest_kept"), [(1000, True), (1001, False)])
def test_the_memory_of_failing_files_is_bounded_oldest_first(refused_endpoint, tmp_path,
                                                             remembered, oldest_kept) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._suspects = {f"file{i}.json": 0 for i in range(remembered)}
    assert exporter._suspect_failed(tmp_path / "new.json", b"[]") is False
    assert "new.json" in exporter._suspects
    assert ("file0.json" in exporter._suspects) is oldest_kept
    assert len(exporter._suspects) == 1001  # at most a thousand others remembered


def test_replay_counts_a_file_settled_at_its_last_failure_and_goes_on(stub, tmp_path,
                                                                      monkeypatch) -> None:
    exporter = poisoned_spool(stub, tmp_path, files=0)
    for _ in range(MAX_FILE_FAILURES):  # failures while Zipkin took other batches
        assert exporter.replay() == 0
        exporter._sent_batches += 1
    with monkeypatch.context() as patched:  # a good file OLDER than the failing one
        patched.setattr(sp, "time", types.SimpleNamespace(time_ns=lambda: 1))
        exporter.spool.put(exporter.encode(spans(1)))
    exporter.spool.put(exporter.encode(spans(1)))  # and one newer
    assert exporter.replay() == 3  # the old good file, the settled one, the newer good file
    assert exporter.spool.size == 0 and exporter.dropped == {"rejected": 1}


def test_a_good_file_between_failing_ones_restarts_the_count_of_failures_alike(
        stub, tmp_path, caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    bad = [spans(1) for _ in range(2 * (MAX_SUSPECTS - 1))]
    markers = {hex_id(batch[0]) for batch in bad}
    stub.status = lambda body: 500 if any(m in body for m in markers) else 202
    for batch in bad[:MAX_SUSPECTS - 1]:
        exporter.spool.put(exporter.encode(batch))
    exporter.spool.put(exporter.encode(spans(1)))
    for batch in bad[MAX_SUSPECTS - 1:]:
        exporter.spool.put(exporter.encode(batch))
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.replay() == 1
    assert len(stub.bodies) == 2 * (MAX_SUSPECTS - 1) + 1  # every file tried: no trip
    assert not exporter._circuit_open() and caplog.records == []


def test_a_resent_file_bisected_at_last_counts_its_spans_maybe_duplicated(stub,
                                                                         tmp_path) -> None:
    exporter, _ = poisoned_batch(stub, tmp_path, tries=1)  # its first answer timed out once
    assert exporter.replay() == 1
    assert exporter.counters["sent"] == 4 and exporter.counters["maybe_duplicated"] == 4


def test_a_file_bisected_at_last_keeps_what_zipkin_could_not_take_then(stub,
                                                                      tmp_path) -> None:
    exporter, batch = poisoned_batch(stub, tmp_path)
    ids = [hex_id(span) for span in batch]
    poison = {ids[0], ids[5]}
    # Zipkin's trouble starts mid-bisect: the part holding trace 1 meets a 503
    stub.status = lambda body: (500 if any(p in body for p in poison)
                                else 503 if ids[1] in body else 202)
    exporter.replay()
    (left,) = exporter.spool.files()
    kept = sorted(span["traceId"].encode() for span in json.loads(left.read_bytes()))
    assert kept == sorted([ids[1], ids[2]])  # the part Zipkin did not take, kept as it was
    assert exporter.dropped == {"rejected": 2} and exporter.counters["sent"] == 2


class PickySession:
    """A requests session whose connection fails for the bodies ``fails(body)`` picks (a
    half of a batch meets Zipkin going away) and that posts the rest for real."""

    def __init__(self, fails) -> None:
        self.fails = fails
        self.real = requests.Session()

    def post(self, url, data=b"", **kwargs):
        if self.fails(data):
            raise requests.ConnectionError("refused")
        return self.real.post(url, data=data, **kwargs)

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("other_half", ["503", "no connection"])
def test_a_500_half_beside_a_half_zipkin_did_not_judge_is_kept_not_dropped(
        stub, tmp_path, caplog, other_half) -> None:
    """Nothing in the answers says Zipkin works (no half taken, no 4xx): the 500 may be
    Zipkin's own trouble, so the lone span is kept for later, and the line names the 500."""
    batch = spans(2)
    first = hex_id(batch[0])
    session = None
    if other_half == "503":
        stub.status = lambda body: 500 if first in body else 503
    else:
        stub.status = lambda body: 500
        session = PickySession(lambda body: first not in body)  # the second half alone
    exporter = make(stub.endpoint, tmp_path, session=session)
    exporter._start_replayer = lambda: None
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        assert exporter.export(batch).name == "SUCCESS"
    assert len(stub.bodies) == (3 if other_half == "503" else 2)  # the whole, then the halves
    assert exporter.dropped == {} and exporter.counters["spooled"] == 2
    assert exporter._circuit_open()
    assert [r.getMessage() for r in caplog.records] == [
        away_line(stub.endpoint, "HTTP 500")]


@pytest.mark.parametrize(("cause", "why"), [("refused", "ConnectionError"),
                                            ("slow", "no answer in time"),
                                            ("503", "HTTP 503")])
def test_the_away_line_says_why(stub, refused_endpoint, tmp_path, caplog, cause, why) -> None:
    endpoint = refused_endpoint if cause == "refused" else stub.endpoint
    if cause == "slow":
        stub.delay = 3.0  # late, however busy the machine
    stub.status = lambda body: 503 if cause == "503" else 202
    exporter = make(endpoint, tmp_path, timeout=1.0)
    exporter._start_replayer = lambda: None
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.export(spans(1))
    assert [r.getMessage() for r in caplog.records] == [
        away_line(endpoint, why)]


def test_a_batch_timed_out_twice_is_dropped_with_why(stub, tmp_path, caplog) -> None:
    stub.delay = 3.0  # late, however busy the machine
    exporter = make(stub.endpoint, tmp_path, timeout=1.0)
    exporter._start_replayer = lambda: None
    exporter.spool.put(exporter.encode(spans(2)), MAX_UNCERTAIN)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.replay()
    assert exporter.dropped == {"timeout": 2}
    assert "cosyvoice-otel: dropped 2 spans: Zipkin's answer timed out again (it may have " \
           "stored them)" in [r.getMessage() for r in caplog.records]


def test_a_file_meeting_zipkin_away_stays_as_it_was_with_its_tries(refused_endpoint,
                                                                   tmp_path) -> None:
    exporter = make(refused_endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    exporter.spool.put(exporter.encode(spans(2)), 1)
    (before,) = exporter.spool.files()
    assert exporter.replay() == 0
    assert exporter.spool.files() == [before]  # not rewritten: same name, same tries
    assert Spool.tries(before) == 1


def test_the_parts_of_a_file_split_when_zipkin_went_away_keep_its_tries(stub, tmp_path) -> None:
    exporter = make(stub.endpoint, tmp_path)
    exporter._start_replayer = lambda: None
    batch = spans(2)
    first = hex_id(batch[0])
    # the whole: refused; its first half: Zipkin away, so the second is not even tried
    stub.status = lambda body: 503 if first in body and body.count(b'"traceId"') == 1 else 500
    exporter.spool.put(exporter.encode(batch), 1)
    exporter.replay()
    parts = exporter.spool.files()
    assert len(parts) == 2 and [Spool.tries(p) for p in parts] == [1, 1]


def test_a_file_that_failed_once_then_went_through_is_forgotten(stub, tmp_path) -> None:
    exporter = poisoned_spool(stub, tmp_path, files=0)
    exporter.replay()
    assert len(exporter._suspects) == 1
    stub.status = lambda body: 202  # whatever it was, Zipkin takes it now
    assert exporter.replay() == 1
    assert exporter._suspects == {}


def test_a_fresh_exporter_has_nothing_to_say_when_its_first_batch_goes_through(
        stub, tmp_path, caplog) -> None:
    exporter = make(stub.endpoint, tmp_path)
    with caplog.at_level(logging.WARNING, logger="cosyvoice_otel.export"):
        exporter.export(spans(1))
    assert caplog.records == []  # no "takes spans again" without an outage


def test_the_circuit_closes_exactly_when_its_wait_is_over(refused_endpoint, tmp_path,
                                                          monkeypatch) -> None:
    clock = fake_monotonic(monkeypatch, zh)
    exporter = make(refused_endpoint, tmp_path)
    exporter._trip("a test")
    clock.now += 0.999
    assert exporter._circuit_open()
    clock.now += 0.001
    assert not exporter._circuit_open()


def test_the_pipelined_sender_is_a_named_daemon_thread(stub, tmp_path) -> None:
    """A daemon: the app's exit never waits on tracing; named: a thread dump says whose."""
    before = set(threading.enumerate())
    exporter = make(stub.endpoint, tmp_path, pipelined=True)
    # (other tests' replayer threads may come and go meanwhile: ours is told by its name)
    (sender,) = [t for t in set(threading.enumerate()) - before if "send" in t.name]
    assert sender.name == "cosyvoice-otel-send" and sender.daemon
    exporter.shutdown()
