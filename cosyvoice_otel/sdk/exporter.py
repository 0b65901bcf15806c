"""A Zipkin exporter that never hurts the app and that no single batch can block.

Selected by ``--exporter zipkin`` (``OTEL_TRACES_EXPORTER=cosyvoice_zipkin``); the SDK's batch
processor calls it from its own thread, never from a request. Spans reach it already redacted
(the configurator puts ``redaction.RedactingSpanExporter`` in front of every exporter); it
encodes each batch once (``zipkin_json``). Compared with the stock JSON exporter it:

* bounds every attempt: 1 s to connect, the configured timeout to answer; after a failure the
  circuit stays open for a backoff (1 s doubling to 30 s) during which batches go straight to
  the spool, so a black-holed Zipkin costs the export thread one timeout, not one per batch;
* spools batches to disk (``--spool-dir``, capped by ``--spool-max-mb``) while Zipkin is
  unreachable or answers 5xx/408/429, and replays them oldest first when it answers again;
* answers every rejection without blocking what comes after: 413 splits the batch in halves
  and sends each (down to one span; a span too big alone is dropped and counted); 400 and
  other 4xx drop the batch with one log line; on replay a spool file that cannot be parsed is
  moved to ``bad/`` and the files behind it go on;
* is at-least-once, with the duplicates bounded and counted: a batch whose answer timed out
  (Zipkin may have stored it) is resent at most ``MAX_UNCERTAIN`` more times, and every such
  resend is counted in ``counters['maybe_duplicated']``;
* logs drops at most once a minute and never raises into the SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cosyvoice_otel.launcher.config import runtime_settings
from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder

logger = logging.getLogger("cosyvoice_otel.export")

CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 30.0
DROP_LOG_INTERVAL = 60.0
MAX_UNCERTAIN = 1  # resends of a batch whose answer timed out: at most 2 copies in Zipkin
STALE_TMP_S = 60.0
_NAME = re.compile(r"^(?P<stem>\d+-(?P<pid>\d+)-\d+(?:-p\d+)*)(?:\.u(?P<tries>\d+))?\.json$")


# Exporters that deliver in the background (a pipelined batch, librdkafka's queue): the SDK's
# force_flush only hands batches to them, so a dying process drains them too (the SIGTERM
# handler, instrumentor.py).
_BACKGROUND: weakref.WeakSet = weakref.WeakSet()


def drain_background(timeout_s: float) -> None:
    """Wait (bounded) until every background-delivering exporter has delivered, spooled or
    counted what it was handed."""
    deadline = time.monotonic() + timeout_s
    for exporter in list(_BACKGROUND):
        try:
            exporter.drain(max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001, S110 - draining must never raise (dying anyway)
            pass


class DropLog:
    """Spans dropped for good, logged at most once per ``DROP_LOG_INTERVAL`` (with the last
    reason), so an outage is a line a minute, not a flood."""

    def __init__(self) -> None:
        self._since_log = 0
        self._last_log = 0.0

    def note(self, count: int, why: str) -> None:
        self._since_log += count
        now = time.monotonic()
        if now - self._last_log >= DROP_LOG_INTERVAL:
            logger.warning("cosyvoice-otel: dropped %d spans (last: %s)", self._since_log, why)
            self._since_log = 0
            self._last_log = now


def _span_count(payload: bytes) -> int:
    # a raw '"traceId"' only occurs as a key: inside a JSON string the quotes are escaped
    return payload.count(b'"traceId"')


class Outcome:
    SENT, REJECTED, TOO_LARGE, UNAVAILABLE, UNCERTAIN = (
        "sent", "rejected", "too_large", "unavailable", "uncertain")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours
    return True


class Spool:
    """Batches on disk, oldest first, under a byte cap. Files: ``<ns>-<pid>-<seq>.json``;
    ``-pN`` marks a part of a split batch, ``.uN`` a batch whose answer timed out N times."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()
        self.size = sum(f.stat().st_size for f in directory.glob("*.json"))

    def _remove_stale_tmp(self) -> None:
        """A process killed (or a disk that filled) mid-write leaves ``*.tmp``: nothing else
        would ever remove them. Another live process's fresh tmp is left alone."""
        now = time.time()
        for tmp in self.directory.glob("*.tmp"):
            match = _NAME.match(tmp.name[:-4])
            try:
                if match and int(match["pid"]) != os.getpid() and _pid_alive(int(match["pid"])) \
                        and now - tmp.stat().st_mtime < STALE_TMP_S:
                    continue
                tmp.unlink()
            except OSError:
                pass

    def _write(self, name: str, payload: bytes) -> bool:
        tmp = self.directory / (name + ".tmp")
        try:
            tmp.write_bytes(payload)
            tmp.replace(self.directory / name)
        except OSError:  # a full disk: leave nothing half-written behind
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        self.size += len(payload)
        return True

    def put(self, payload: bytes, tries: int = 0) -> bool:
        with self._lock:
            if self.size + len(payload) > self.max_bytes:
                return False
            self._seq += 1
            stem = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
            return self._write(stem + (f".u{tries}" if tries else "") + ".json", payload)

    def replace(self, path: Path, parts: list[tuple[bytes, int]]) -> None:
        """Put ``parts`` (payload, tries) where ``path`` was, in its place in the order (``-pN``
        sorts after the stem's other parts and before the next batch)."""
        match = _NAME.match(path.name)
        stem = match["stem"] if match else path.name[:-5]
        with self._lock:  # written first: a crash in between duplicates, never loses
            for i, (payload, tries) in enumerate(parts):
                self._write(f"{stem}-p{i}" + (f".u{tries}" if tries else "") + ".json", payload)
        self.remove(path)

    def oldest(self) -> Path | None:
        files = sorted(self.directory.glob("*.json"))
        return files[0] if files else None

    def set_aside(self, path: Path) -> None:
        bad = self.directory / "bad"
        try:
            bad.mkdir(exist_ok=True)
            size = path.stat().st_size
            path.replace(bad / path.name)
            with self._lock:
                self.size = max(0, self.size - size)
        except OSError:
            self.remove(path)

    def remove(self, path: Path) -> None:
        with self._lock:
            try:
                size = path.stat().st_size
                path.unlink()
                self.size = max(0, self.size - size)
            except FileNotFoundError:
                pass

    @staticmethod
    def tries(path: Path) -> int:
        match = _NAME.match(path.name)
        return int(match["tries"]) if match and match["tries"] else 0


class SpoolingExporter(SpanExporter):
    """What the Zipkin HTTP and Kafka exporters share: the disk spool, the counters' meaning
    (``dropped`` = spans lost for good: export errors and a full spool; the health metrics read
    both exporters alike), the rate-limited drop log, and ``export()``: refuse after shutdown,
    encode once, hand the payload over (``_hand_over``), never raise into the SDK."""

    counters: dict[str, int]
    _closed: bool

    def _init_spool(self, path: Path, max_bytes: int, spool_dir: str, away: str) -> None:
        self._encoder = ZipkinJsonEncoder()
        self._drops = DropLog()
        self.spool: Spool | None
        try:
            self.spool = Spool(path, max_bytes)
        except OSError as exc:
            logger.warning("cosyvoice-otel: spool %s unusable (%s); batches will be dropped "
                           "while %s is away", spool_dir, exc, away)
            self.spool = None

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        return self._encoder.encode(spans)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            payload = self.encode(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter must never raise into the SDK
            return self._failed(exc, len(spans))
        return self._hand_over(payload)

    def _hand_over(self, payload: bytes) -> SpanExportResult:
        raise NotImplementedError

    def _failed(self, exc: BaseException, count: int) -> SpanExportResult:
        logger.warning("cosyvoice-otel: export failed (%s: %s); batch dropped",
                       type(exc).__name__, exc)
        self.counters["export_errors"] += count
        self._note_drop(count, "an export error")
        return SpanExportResult.FAILURE

    def _note_drop(self, count: int, why: str) -> None:
        self.counters["dropped"] += count
        self._drops.note(count, why)


class ResilientZipkinExporter(SpoolingExporter):
    def __init__(self, endpoint: str | None = None, timeout: float | None = None,
                 spool_dir: str | None = None, spool_max_bytes: int | None = None,
                 session: requests.Session | None = None, pipelined: bool = False) -> None:
        # what the caller (our configurator) did not pass comes from the option table, once
        settings = None if None not in (endpoint, timeout, spool_dir, spool_max_bytes) \
            else runtime_settings()
        self.endpoint = endpoint or settings.zipkin_endpoint
        self.timeout = float(timeout or settings.export_timeout)
        spool_dir = spool_dir or settings.spool_root  # the configurator passes all four
        max_bytes = spool_max_bytes or int(settings.spool_max_mb * 1024 * 1024)
        # one spool per endpoint: batches must go back to the Zipkin they were meant for
        spool_path = Path(spool_dir) / hashlib.sha1(self.endpoint.encode()).hexdigest()[:12]
        self._init_spool(spool_path, max_bytes, spool_dir, "Zipkin")
        self.session = session or requests.Session()
        self._closed = False
        self._open_until = 0.0  # circuit: no network attempts before this monotonic time
        self._backoff = 1.0
        self._replay_lock = threading.Lock()
        self._replayer: threading.Thread | None = None
        self.counters = {"sent": 0, "spooled": 0, "replayed": 0, "rejected": 0, "dropped": 0,
                         "too_large": 0, "split": 0, "maybe_duplicated": 0, "bad_files": 0,
                         "failures": 0, "export_errors": 0}
        # pipelined (what the configurator asks for): export() encodes the batch and hands it
        # to a sender thread, so the next batch is encoded while Zipkin ingests this one; at
        # most one batch waits and one is in flight (bounded memory, order kept)
        self._outbox: queue.Queue[bytes | None] | None = None
        if pipelined:
            self._outbox = queue.Queue(maxsize=1)
            threading.Thread(target=self._send_loop, name="cosyvoice-otel-send",
                             daemon=True).start()
            _BACKGROUND.add(self)

    def drain(self, timeout_s: float) -> None:
        """Until the sender has finished what it was handed (bounded)."""
        deadline = time.monotonic() + timeout_s
        while (self._outbox is not None and self._outbox.unfinished_tasks
               and time.monotonic() < deadline):
            time.sleep(0.005)

    # -- network
    def _post(self, payload: bytes) -> str:
        try:
            resp = self.session.post(self.endpoint, data=payload,
                                     headers={"Content-Type": "application/json"},
                                     timeout=(CONNECT_TIMEOUT, self.timeout))
        except requests.ReadTimeout:
            return Outcome.UNCERTAIN  # sent; Zipkin may have stored it
        except requests.RequestException:
            return Outcome.UNAVAILABLE
        status = resp.status_code
        if 200 <= status < 300:
            return Outcome.SENT
        if status == 413:
            return Outcome.TOO_LARGE
        if status in (408, 429) or status >= 500:
            return Outcome.UNAVAILABLE
        logger.warning("cosyvoice-otel: Zipkin rejected a batch of %d spans (%d: %s); dropped",
                       _span_count(payload), status, resp.text[:200].strip())
        return Outcome.REJECTED

    def _deliver(self, payload: bytes, tries: int = 0) -> list[tuple[bytes, int]]:
        """Send one batch, splitting it on 413. Returns the parts still to send later (Zipkin
        away, or its answer timed out) with their timed-out count; an empty list when every
        part was sent or dropped for good."""
        count = _span_count(payload)
        outcome = self._post(payload)
        if outcome == Outcome.SENT:
            self.counters["sent"] += count
            if tries:
                self.counters["maybe_duplicated"] += count
            self._reset()
            return []
        if outcome == Outcome.REJECTED:
            self.counters["rejected"] += count
            return []
        if outcome == Outcome.TOO_LARGE:
            spans = json.loads(payload)
            if len(spans) <= 1:
                self.counters["too_large"] += count
                logger.warning("cosyvoice-otel: Zipkin refused a single span of %d bytes as "
                               "too large (413); dropped", len(payload))
                return []
            self.counters["split"] += 1
            mid = len(spans) // 2
            left: list[tuple[bytes, int]] = []
            for half in (spans[:mid], spans[mid:]):
                part = json.dumps(half, ensure_ascii=False).encode("utf-8")
                # once Zipkin is away, the rest waits too (no attempt per part)
                left.extend([(part, tries)] if left else self._deliver(part, tries))
            return left
        self._trip()
        if outcome == Outcome.UNCERTAIN:
            if tries >= MAX_UNCERTAIN:
                self._note_drop(count, "its answer timed out again")
                return []
            return [(payload, tries + 1)]
        return [(payload, tries)]

    def _circuit_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _trip(self) -> None:
        self._open_until = time.monotonic() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    def _reset(self) -> None:
        self._open_until = 0.0
        self._backoff = 1.0

    # -- the SpanExporter contract (export(): SpoolingExporter)
    def _hand_over(self, payload: bytes) -> SpanExportResult:
        if self._outbox is None:
            return self._ship(payload)
        self._outbox.put(payload)  # waits while one batch is queued: the SDK's queue buffers
        return SpanExportResult.SUCCESS  # delivered, spooled or counted by the sender

    def _send_loop(self) -> None:
        assert self._outbox is not None
        while True:
            payload = self._outbox.get()
            try:
                if payload is None:
                    return
                self._ship(payload)
            finally:
                self._outbox.task_done()

    def _ship(self, payload: bytes) -> SpanExportResult:
        """Deliver an encoded batch, or spool it, or count it dropped."""
        try:
            left = [(payload, 0)] if self._circuit_open() else self._deliver(payload)
            if not left:
                if self.spool is not None and self.spool.size > 0:  # no directory scan here
                    self._start_replayer()
                return SpanExportResult.SUCCESS
            self.counters["failures"] += 1  # a batch not delivered at once (circuit or post)
            kept = True
            for part, tries in left:
                if self.spool is not None and self.spool.put(part, tries):
                    self.counters["spooled"] += _span_count(part)
                else:
                    kept = False
                    self._note_drop(_span_count(part), "Zipkin away and the spool full")
            self._start_replayer()
            return SpanExportResult.SUCCESS if kept else SpanExportResult.FAILURE
        except Exception as exc:  # noqa: BLE001 - an exporter must never raise into the SDK
            return self._failed(exc, _span_count(payload))

    # -- replay
    def replay(self, budget: int | None = None) -> int:
        """Send spooled batches oldest first until Zipkin is away; returns how many files
        were delivered (sent, or dropped for good). A file that cannot be read or parsed is
        set aside; a rejected one is dropped; neither stops the files behind it."""
        if self.spool is None:
            return 0
        done = 0
        with self._replay_lock:
            while budget is None or done < budget:
                path = self.spool.oldest()
                if path is None:
                    break
                try:
                    payload = path.read_bytes()
                    if not isinstance(json.loads(payload), list):
                        raise ValueError("not a JSON list of spans")
                except FileNotFoundError:
                    continue  # another process replayed it
                except (OSError, ValueError) as exc:
                    self.counters["bad_files"] += 1
                    logger.warning("cosyvoice-otel: spool file %s is unreadable (%s); moved "
                                   "to %s", path.name, exc, self.spool.directory / "bad")
                    self.spool.set_aside(path)
                    continue
                tries = Spool.tries(path)
                sent_before = self.counters["sent"]
                left = self._deliver(payload, tries)
                self.counters["replayed"] += self.counters["sent"] - sent_before
                if left == [(payload, tries)]:
                    break  # Zipkin away: keep it, try later
                if left:
                    self.spool.replace(path, left)
                    break
                self.spool.remove(path)
                done += 1
        return done

    def _start_replayer(self) -> None:
        if self._replayer is not None and self._replayer.is_alive():
            return
        self._replayer = threading.Thread(target=self._replay_loop, name="cosyvoice-otel-spool",
                                          daemon=True)
        self._replayer.start()

    def _replay_loop(self) -> None:
        while not self._closed and self.spool is not None and self.spool.oldest() is not None:
            wait = max(0.0, self._open_until - time.monotonic())
            time.sleep(min(wait, MAX_BACKOFF) if wait else 0.05)
            if not self._closed:
                self.replay(budget=20)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        self.drain(timeout_millis / 1000)  # the sender's batch: delivered, spooled or counted
        while (self.spool is not None and self.spool.oldest() is not None
               and not self._circuit_open() and time.monotonic() < deadline):
            if not self.replay(budget=1):
                break
        return True

    def shutdown(self) -> None:
        if self._closed:
            return
        self.force_flush(2000)  # bounded: what is still spooled stays for the next start
        self._closed = True
        if self._outbox is not None:
            try:
                self._outbox.put_nowait(None)  # the sender ends (if it is not stuck in a post)
            except queue.Full:
                pass
        self.session.close()
