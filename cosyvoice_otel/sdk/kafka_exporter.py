"""Spans to Zipkin through Kafka: each batch is one message, a Zipkin JSON v2 list, on the topic
Zipkin's own Kafka collector reads (``KAFKA_BOOTSTRAP_SERVERS``, topic ``zipkin``).

Selected by ``--exporter kafka`` (``OTEL_TRACES_EXPORTER=cosyvoice_kafka``). The client is
confluent-kafka (librdkafka): the reference C client of the Kafka ecosystem, maintained by
Confluent, with a bounded in-memory queue, batching, compression and per-message delivery
reports; pure-Python clients (kafka-python, aiokafka) are slower and would run their protocol
work under the GIL, next to the app's requests.

What it guarantees, like the HTTP exporter (zipkin_http.py):

* the app never blocks or fails on Kafka: ``produce`` only queues (librdkafka's queue is
  bounded: ``queue.buffering.max.kbytes``); a delivery report arrives in our poller thread;
* while the broker is unreachable a batch waits in librdkafka until ``message.timeout.ms``,
  then its delivery report says so and it goes to the disk spool (the same ``Spool`` as the
  HTTP exporter, one folder per servers+topic, capped by ``--spool-max-mb``); a full local queue
  spools at once; the spool is replayed, oldest first, once a delivery succeeds again (or a
  probe does); past the cap batches are dropped and counted;
* no batch can block: a batch the broker refuses for its size (``message.max.bytes``) is split
  in halves down to single spans, what fits is delivered and a span too large alone is dropped
  and counted (``too_large``); any other non-retriable refusal drops the batch (``rejected``);
  a spool file over ``spool.MAX_FILE_BYTES`` is set aside unread;
* the counters of every exporter of ours (``export_base.CountingExporter``), so the
  tracer-health metrics read both alike;
* at shutdown what is still queued is purged into the spool, not lost.
Redaction happened before (``RedactingSpanExporter``), exactly as on the HTTP path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SpanExportResult

from cosyvoice_otel.sdk.export_base import SpoolingExporter, encode_spans, span_count
from cosyvoice_otel.sdk.spool import Spool

logger = logging.getLogger("cosyvoice_otel.export")

PROBE_INTERVAL = 2.0  # while batches wait in the spool: one replay attempt this often


def producer_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "cosyvoice-otel",
        "compression.type": "lz4",  # Zipkin's Java consumer decompresses it transparently
        "linger.ms": 20,  # a few batches per request to the broker under load
        "acks": "all",
        "queue.buffering.max.kbytes": 32 * 1024,  # the in-memory bound: 32 MiB
        "queue.buffering.max.messages": 10_000,
        "message.timeout.ms": 10_000,  # then the delivery report fails: the batch is spooled
        "reconnect.backoff.max.ms": 2_000,
        # librdkafka's own log lines (one per failed connect) would flood the app's stderr
        # while a broker is away; that case is handled (spool) and logged once by us
        "log_level": 0,
    }


class KafkaZipkinExporter(SpoolingExporter):
    def __init__(self, bootstrap_servers: str, topic: str, spool_dir: str, spool_max_bytes: int,
                 config: dict[str, Any] | None = None) -> None:
        from confluent_kafka import Producer

        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        key = hashlib.sha1(f"kafka:{self.bootstrap_servers}/{self.topic}".encode()).hexdigest()
        self._init_spool(Path(spool_dir) / key[:12], int(spool_max_bytes), spool_dir, "Kafka")
        self.producer = Producer({**producer_config(self.bootstrap_servers), **(config or {})})
        self._lock = threading.Lock()
        self._replaying: Path | None = None  # the spool file whose delivery we wait for
        self._claim: int | None = None  # its flock: no other replica sends it meanwhile
        self._maybe_sent = False  # its last sender died mid-send: it may be in Kafka already
        self._next_probe = 0.0
        self._away = False  # in a streak of failed deliveries (logged once per streak)
        self._poller = threading.Thread(target=self._poll_loop, name="cosyvoice-otel-kafka",
                                        daemon=True)
        self._poller.start()

    def drain(self, timeout_s: float) -> None:
        """Until librdkafka has a delivery report for everything queued (bounded)."""
        self.producer.flush(timeout_s)

    # -- the SpanExporter contract (export(): SpoolingExporter)
    def _hand_over(self, payload: bytes) -> SpanExportResult:
        self._produce(payload, None)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        left = self.producer.flush(max(0.0, deadline - time.monotonic()))
        while (not self._closed and self.spool is not None and self.spool.size > 0
               and time.monotonic() < deadline and self._replay_one()):
            pass
        return left == 0

    def shutdown(self) -> None:
        if self._closed:
            return
        self.force_flush(3000)
        self._closed = True
        try:  # what librdkafka still holds goes to the spool (delivery reports: purged)
            self.producer.purge(in_queue=True, in_flight=False)
            self.producer.poll(0)
            self.producer.flush(1.0)
        except Exception as exc:  # noqa: BLE001
            logger.warning("cosyvoice-otel: Kafka producer shutdown: %s", exc)

    # -- producing and delivery reports
    def _produce(self, payload: bytes, replay_path: Path | None) -> bool:
        """Queue one message; True when librdkafka took it (its delivery report decides)."""
        count = span_count(payload)
        try:
            self.producer.produce(self.topic, payload, on_delivery=lambda err, msg: self._report(
                err, payload, count, replay_path))
            return True
        except BufferError:  # librdkafka's bounded queue is full: Kafka has been away a while
            if replay_path is None:
                self.keep(payload, 0, "Kafka away")
            return False
        except Exception as exc:  # noqa: BLE001 - e.g. a message over message.max.bytes
            self._refused(payload, replay_path, _too_large(exc), str(exc))
            return False

    def _refused(self, payload: bytes, replay_path: Path | None, too_large: bool,
                 why: str) -> None:
        """Kafka will never take this message: a batch too large is split in halves (each
        produced in turn), a span too large alone or any other refusal is dropped, counted."""
        count = span_count(payload)
        if replay_path is not None:
            self._discard(replay_path)  # its content goes on below, or is counted
        spans = json.loads(payload) if too_large and count > 1 else None
        if spans is None or len(spans) <= 1:
            self.drop(count, "too_large" if too_large else "rejected",
                      f"Kafka refused them ({why})")
            return
        self.counters["split"] += 1
        mid = len(spans) // 2
        for half in (spans[:mid], spans[mid:]):
            self._produce(encode_spans(half), None)

    def _report(self, err: Any, payload: bytes, count: int, replay_path: Path | None) -> None:
        """librdkafka's delivery report (in the poller thread, or in flush())."""
        claim, maybe_sent = None, False
        with self._lock:
            if replay_path is not None and self._replaying == replay_path:
                self._replaying = None
                claim, self._claim = self._claim, None
                maybe_sent = self._maybe_sent
        try:
            if err is None and maybe_sent:
                self.counters["maybe_duplicated"] += count
            self._settle_report(err, payload, count, replay_path)
        finally:
            if self.spool is not None:
                self.spool.release(claim)  # after the file is removed or left for later

    def _settle_report(self, err: Any, payload: bytes, count: int,
                       replay_path: Path | None) -> None:
        if err is None:
            if self._away:
                self._away = False
                self._log.note("back", 0, f"Kafka {self.bootstrap_servers} reachable again")
            self.counters["sent"] += count
            if replay_path is not None:
                self.counters["replayed"] += count
                self._discard(replay_path)
            return
        if not _retriable(err):
            self._refused(payload, replay_path, _too_large(err), str(err))
            return
        self.counters["failures"] += 1
        self._next_probe = time.monotonic() + PROBE_INTERVAL
        self._away = True
        self._log.note("away", 0, f"Kafka {self.bootstrap_servers} unreachable ({err}); "
                                  "batches go to the spool and are replayed when it is back")
        if replay_path is None:
            self.keep(payload, 0, "Kafka away")
        elif self.spool is not None:  # a replayed file stays, no longer in flight
            self.spool.mark(replay_path, 0, flight=False)

    def _unclaim(self) -> None:
        with self._lock:
            self._replaying = None
            claim, self._claim = self._claim, None
        if self.spool is not None:
            self.spool.release(claim)

    def _discard(self, path: Path) -> None:
        if self.spool is not None:
            self.spool.remove(path)

    # -- replay
    def _replay_one(self) -> bool:
        """Produce the oldest spool file, unless one is already on its way. True when one was
        handed to the producer (or settled without it: unreadable, taken by another process)."""
        if self.spool is None:
            return False
        with self._lock:
            if self._replaying is not None:
                return False
            claimed = self.spool.claim_oldest()  # one another replica holds is passed over
            if claimed is None:
                return False
            path, self._claim = claimed
            self._maybe_sent = Spool.in_flight(path)
            path = self.spool.mark(path, 0, flight=True)  # a crash from here: maybe sent
            self._replaying = path
        try:
            payload = self.spool.read(path)
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):  # else: another process replayed it
                self.set_aside(path, "spool_unreadable", f"is unreadable ({exc})")
            self._unclaim()
            return True
        if not self._produce(payload, path):
            if self.spool is not None and path.exists():
                self.spool.mark(path, 0, flight=False)
            self._unclaim()
            return False
        self.producer.flush(15.0)  # its delivery report decides: removed, or kept for later
        return True

    def _poll_loop(self) -> None:
        while not self._closed:
            try:
                self.producer.poll(0.1)  # delivery reports
                if (self.spool is not None and self.spool.size > 0
                        and time.monotonic() >= self._next_probe):
                    self._next_probe = time.monotonic() + PROBE_INTERVAL
                    while not self._closed and self._replay_one() and self.spool.size > 0:
                        if time.monotonic() >= self._next_probe:
                            break  # one probe interval of replay, then serve reports again
            except Exception as exc:  # noqa: BLE001 - the poller must never die
                logger.warning("cosyvoice-otel: Kafka poller: %s", exc)
                time.sleep(0.5)


def _too_large(err: Any) -> bool:
    """A refusal for the message's size (a KafkaError, or the exception produce() raised)."""
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(err, KafkaException) and err.args:
        err = err.args[0]
    if isinstance(err, KafkaError):
        codes = {getattr(KafkaError, name, None) for name in ("MSG_SIZE_TOO_LARGE",
                                                               "_MSG_SIZE_TOO_LARGE")}
        return err.code() in codes - {None}
    return "size" in str(err).lower() or "too large" in str(err).lower()


def _retriable(err: Any) -> bool:
    """Broker away, timed out, purged at shutdown: worth another try from the spool."""
    from confluent_kafka import KafkaError

    if err.retriable():
        return True
    return err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_QUEUE,
                          KafkaError._PURGE_INFLIGHT, KafkaError._TRANSPORT,
                          KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
                          KafkaError.NETWORK_EXCEPTION, KafkaError._RESOLVE)
