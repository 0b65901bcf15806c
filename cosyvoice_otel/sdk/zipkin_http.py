"""Zipkin over HTTP (JSON v2): an exporter that never hurts the app and that no batch can block.

Selected by ``--exporter zipkin`` (``OTEL_TRACES_EXPORTER=cosyvoice_zipkin``); the SDK's batch
processor calls it from its own thread, never from a request. Spans reach it redacted (the
configurator puts ``redaction.RedactingSpanExporter`` in front of every exporter), and each batch
is encoded once (``zipkin_json``). Every answer is read as one of two things:

* **Zipkin is away**: no connection, no answer in time, ``502/503/504``, ``408/429``, or an
  answer that no batch could cause (``401/403/404/405``, a redirect: the endpoint is wrong). The
  circuit opens for a backoff (1 s doubling to 30 s): batches go straight to the disk spool,
  which is replayed, oldest first, when Zipkin answers again. A black-holed Zipkin costs the
  export thread one timeout, not one per batch.
* **Zipkin refuses THIS batch**: ``400``, ``413``, ``422``, or a ``500`` the halves of the batch
  do not share. The batch is bisected: what Zipkin takes is delivered, the spans it refuses
  alone are dropped and counted (``rejected``, or ``too_large`` for 413). A 5xx is only taken
  as a refusal with evidence that Zipkin works (a half got through, or a 4xx came back); when
  both halves fail with it too, it is Zipkin's trouble: the batch waits in the spool.

A spooled batch that keeps failing with a 5xx while other batches get through is the batch's
fault: after ``spool.MAX_FILE_FAILURES`` such failures a copy goes to ``bad/`` (for a look) and
the batch is bisected to the end, so only the spans Zipkin refuses alone are lost (``rejected``).
Halves keep a trace's spans together: what storage refuses is usually one trace. A file over
``spool.MAX_FILE_BYTES`` or not a list of spans is set aside unread (``spool_unreadable``).
Replay runs in its own thread, one file at a time, backing off when a round settles nothing:
the live path keeps flowing while it works through a backlog.

At-least-once, with the duplicates bounded and counted: a batch whose answer timed out (Zipkin
may have stored it) is resent at most ``MAX_UNCERTAIN`` more times, then dropped (``timeout``);
each resend counts in ``counters['maybe_duplicated']``. Failures are logged by streak
(``export_base.StreakLog``), never one line per span.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import requests
import urllib3
from opentelemetry.sdk.trace.export import SpanExportResult

from cosyvoice_otel.sdk.export_base import SpoolingExporter, encode_spans, span_count
from cosyvoice_otel.sdk.spool import MAX_FILE_FAILURES, Spool
from cosyvoice_otel.urls import shown

logger = logging.getLogger("cosyvoice_otel.export")

CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 30.0
MAX_UNCERTAIN = 1  # resends of a batch whose answer timed out: at most 2 copies in Zipkin
MAX_SUSPECTS = 3  # replay: files failing with a shared 5xx in a row before Zipkin counts as away
# what Zipkin (or a proxy before it) answers about a batch's CONTENT
REFUSING = frozenset({400, 413, 422})
# a 5xx that says "not now" rather than "not this"
AWAY_5XX = frozenset({502, 503, 504})

SENT, REFUSED, AWAY, UNCERTAIN, SKIPPED = "sent", "refused", "away", "uncertain", "skipped"
TIMED_OUT = "no answer in time"


class Answer(NamedTuple):
    outcome: str
    status: int = 0
    detail: str = ""


class Part(NamedTuple):
    """A batch (or part of one) that could not be delivered now."""

    payload: bytes
    tries: int  # answers that timed out so far
    cause: str  # away | uncertain | suspect (a 5xx the batch may cause: evidence pending)


def _sent(exc: requests.RequestException) -> bool:
    """The batch may have reached Zipkin: the connection was made and then closed or reset
    before the status line (urllib3's ``ProtocolError``: "Connection aborted"), or the answer
    broke off. A refused, unresolvable or timed-out CONNECTION sent nothing."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.InvalidURL,
                        requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return False
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, urllib3.exceptions.ProtocolError)


def classify(status: int) -> str:
    """An HTTP status -> SENT, REFUSED (about this batch) or AWAY (about Zipkin)."""
    if 200 <= status < 300:
        return SENT
    if status in REFUSING or (status >= 500 and status not in AWAY_5XX):
        return REFUSED
    return AWAY


def halves(spans: list[Any]) -> tuple[list[Any], list[Any]]:
    """Two halves of a batch, a trace's spans kept together while the batch holds several
    traces: what Zipkin's storage refuses is usually one trace (a mapping conflict on one of
    its tag values), so one half is clean and shows Zipkin works."""
    by_trace: dict[Any, list[Any]] = {}
    for span in spans:
        key = span.get("traceId") if isinstance(span, dict) else None
        by_trace.setdefault(key, []).append(span)
    if len(by_trace) < 2:
        mid = len(spans) // 2
        return spans[:mid], spans[mid:]
    first: list[Any] = []
    groups = list(by_trace.values())
    while groups and (not first or len(first) + len(groups[0]) <= len(spans) // 2):
        first.extend(groups.pop(0))
    return first, [span for group in groups for span in group]


class ResilientZipkinExporter(SpoolingExporter):
    def __init__(self, endpoint: str, timeout: float, spool_dir: str, spool_max_bytes: int,
                 session: requests.Session | None = None, pipelined: bool = False) -> None:
        self.endpoint = endpoint
        self.timeout = float(timeout)
        # one spool per endpoint: batches must go back to the Zipkin they were meant for
        spool_path = Path(spool_dir) / hashlib.sha1(self.endpoint.encode()).hexdigest()[:12]
        self._init_spool(spool_path, int(spool_max_bytes), spool_dir, "Zipkin")
        self.session = session or requests.Session()
        self._open_until = 0.0  # circuit: no network attempts before this monotonic time
        self._backoff = 1.0
        self._away = False
        self._replay_lock = threading.Lock()
        self._replayer: threading.Thread | None = None
        self._sent_batches = 0  # evidence that Zipkin works: batches it took, ever
        self._suspects: dict[str, int] = {}  # spool file -> _sent_batches at its last failure
        # replay rounds that settled nothing wait before the next (the live path does not)
        self._replay_after = 0.0
        self._replay_backoff = 1.0
        # pipelined (what the configurator asks for): export() encodes the batch and hands it
        # to a sender thread, so the next batch is encoded while Zipkin ingests this one; at
        # most one batch waits and one is in flight (bounded memory, order kept)
        self._outbox: queue.Queue[bytes | None] | None = None
        if pipelined:
            self._outbox = queue.Queue(maxsize=1)
            threading.Thread(target=self._send_loop, name="cosyvoice-otel-send",
                             daemon=True).start()

    def drain(self, timeout_s: float) -> None:
        """Until the sender has finished what it was handed (bounded)."""
        deadline = time.monotonic() + timeout_s
        while (self._outbox is not None and self._outbox.unfinished_tasks
               and time.monotonic() < deadline):
            time.sleep(0.005)

    # -- network
    def _post(self, payload: bytes) -> Answer:
        try:
            resp = self.session.post(self.endpoint, data=payload,
                                     headers={"Content-Type": "application/json"},
                                     timeout=(CONNECT_TIMEOUT, self.timeout))
        except requests.ReadTimeout:
            return Answer(UNCERTAIN, 0, TIMED_OUT)  # sent; Zipkin may have stored it
        except requests.RequestException as exc:
            if _sent(exc):  # the connection closed after the batch went out: maybe stored
                return Answer(UNCERTAIN, 0, "the connection closed before an answer")
            return Answer(AWAY, 0, type(exc).__name__)
        status = resp.status_code
        outcome = classify(status)
        return Answer(outcome, status, "" if outcome == SENT else resp.text[:200].strip())

    def _settle(self, payload: bytes, spans: list[Any] | None, answer: Answer, tries: int,
                healthy: bool, live: bool = True, tally: list[int] | None = None) -> list[Part]:
        """Act on Zipkin's answer to ``payload``: count it sent, keep it for later, or bisect a
        refused batch down to the spans Zipkin refuses alone. ``healthy``: Zipkin was seen
        taking (or judging) other parts of this delivery, so a 5xx is about the content.
        ``live``: a suspect (a 5xx the batch may cause) opens the circuit; replay opens it
        itself, only when several files in a row fail alike (the live path keeps flowing
        while replay works through a backlog). ``tally`` collects the spans this delivery got
        through (replay counts them, whatever the live thread sends meanwhile). Returns what
        could not be delivered now."""
        count = span_count(payload)
        if answer.outcome == SENT:
            self.counters["sent"] += count
            if tally is not None:
                tally.append(count)
            self._sent_batches += 1
            if tries:
                self.counters["maybe_duplicated"] += count
            self._reset()
            return []
        if answer.outcome == SKIPPED:  # Zipkin went away before this part was tried
            return [Part(payload, tries, AWAY)]
        if answer.outcome == AWAY:
            self._trip(f"HTTP {answer.status}" if answer.status else answer.detail)
            return [Part(payload, tries, AWAY)]
        if answer.outcome == UNCERTAIN:
            self._trip(answer.detail)
            if tries >= MAX_UNCERTAIN:
                again = ("Zipkin's answer timed out again" if answer.detail == TIMED_OUT
                         else "Zipkin closed the connection before answering again")
                self.drop(count, "timeout", f"{again} (it may have stored them)")
                return []
            return [Part(payload, tries + 1, UNCERTAIN)]
        server_error = answer.status >= 500
        spans = json.loads(payload) if spans is None else spans
        if len(spans) <= 1:
            if server_error and not healthy:  # one span and a 5xx: Zipkin's, or the span's?
                if live:
                    self._trip(f"HTTP {answer.status}")
                return [Part(payload, tries, "suspect")]
            reason = "too_large" if answer.status == 413 else "rejected"
            self.drop(count, reason, f"Zipkin refused them alone (HTTP {answer.status}: "
                                     f"{answer.detail[:120]})")
            return []
        self.counters["split"] += 1
        two = halves(spans)
        parts = [encode_spans(half) for half in two]
        answers: list[Answer] = []
        for part in parts:  # once Zipkin is away, the rest waits too (no attempt per part)
            gone = answers and answers[-1].outcome in (AWAY, UNCERTAIN)
            answers.append(Answer(SKIPPED) if gone else self._post(part))
        if server_error and not healthy and all(
                a.outcome == REFUSED and a.status >= 500 for a in answers):
            # the halves share the 5xx: Zipkin's trouble (storage down), not this batch's
            if live:
                self._trip(f"HTTP {answer.status}")
            return [Part(payload, tries, "suspect")]
        healthy = healthy or any(a.outcome == SENT or (a.outcome == REFUSED and a.status < 500)
                                 for a in answers)
        left: list[Part] = []
        for part, half, half_answer in zip(parts, two, answers, strict=True):
            left.extend(self._settle(part, half, half_answer, tries, healthy, live, tally))
        return left

    def _deliver(self, payload: bytes, tries: int = 0, live: bool = True,
                 tally: list[int] | None = None) -> list[Part]:
        return self._settle(payload, None, self._post(payload), tries, False, live, tally)

    def _circuit_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _trip(self, why: str) -> None:
        self._open_until = time.monotonic() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        self._away = True
        self._log.note("away", 0, f"Zipkin at {shown(self.endpoint)} is not taking spans ({why}); "
                                  "batches wait in the spool and are replayed when it does")

    def _reset(self) -> None:
        self._open_until = 0.0
        self._backoff = 1.0
        if self._away:
            self._away = False
            self._log.note("back", 0, f"Zipkin at {shown(self.endpoint)} takes spans again")

    # -- the SpanExporter contract (export(): CountingExporter)
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
            left = ([Part(payload, 0, AWAY)] if self._circuit_open()
                    else self._deliver(payload))
            if not left:
                if self.spool is not None and self.spool.size > 0:  # no directory scan here
                    self._start_replayer()
                return SpanExportResult.SUCCESS
            self.counters["failures"] += 1  # a batch not delivered at once (circuit or post)
            kept = all([self.keep(part.payload, part.tries, "Zipkin away") for part in left])
            self._start_replayer()
            return SpanExportResult.SUCCESS if kept else SpanExportResult.FAILURE
        except Exception as exc:  # noqa: BLE001 - an exporter must never raise into the SDK
            return self._failed(exc, span_count(payload))

    # -- replay
    def replay(self, budget: int | None = None) -> int:
        """Send spooled batches oldest first until Zipkin is away; returns how many files
        were settled (delivered, or dropped for good). An unreadable file is set aside; a
        file failing with a 5xx is passed over (up to ``MAX_SUSPECTS`` in a row) and set aside
        once it has failed ``MAX_FILE_FAILURES`` times while Zipkin took other batches."""
        if self.spool is None:
            return 0
        done = 0
        suspects = 0
        with self._replay_lock:
            for path in self.spool.files():
                if budget is not None and done >= budget:
                    break
                claim = self.spool.claim(path)
                if claim is None:
                    continue  # another replica is sending it (or has sent it)
                try:
                    step = self._replay_file(path)
                finally:
                    self.spool.release(claim)  # after the file is removed or put back
                if step == "stop":
                    break
                if step in ("done", "settled"):
                    done += 1
                    if step == "done":
                        suspects = 0
                elif step == "suspect":
                    suspects += 1
                    if suspects >= MAX_SUSPECTS:  # several batches alike: Zipkin's trouble
                        self._trip("HTTP 5xx for every batch replayed")
                        break
        return done

    def _replay_file(self, path: Path) -> str:
        """One claimed spool file: ``done`` (delivered), ``settled`` (a suspect bisected to the
        end), ``skip`` (passed over), ``suspect`` (a 5xx its halves share, not yet pinned on
        it) or ``stop`` (Zipkin away or late)."""
        assert self.spool is not None
        try:
            payload = self.spool.read(path)
            if not isinstance(json.loads(payload), list):
                raise ValueError("not a JSON list of spans")
        except FileNotFoundError:
            return "skip"  # another process replayed it
        except (OSError, ValueError) as exc:
            self.set_aside(path, "spool_unreadable", f"is unreadable ({exc})")
            return "skip"
        tries = Spool.tries(path)
        if Spool.in_flight(path):  # its sender died mid-send: Zipkin may have stored it
            tries += 1
        sending = self.spool.mark(path, tries, flight=True)
        tally: list[int] = []
        left = self._deliver(payload, tries, live=False, tally=tally)
        self.counters["replayed"] += sum(tally)
        if not left:
            self.spool.remove(sending)
            self._suspects.pop(path.name, None)
            return "done"
        path = self.spool.mark(sending, tries, flight=False)  # an answer came: not in flight
        if left == [Part(payload, tries, "suspect")]:
            return "settled" if self._suspect_failed(path, payload) else "suspect"
        if left == [Part(payload, tries, AWAY)]:
            return "stop"  # Zipkin away: the file stays as it is, the rest waits
        self._requeue(path, payload, left)
        return "stop"  # Zipkin away (or its answer late): the rest waits

    def _requeue(self, path: Path, payload: bytes, left: list[Part]) -> None:
        """What is left of a spooled batch goes back in its place; a part the disk has no
        room for is counted lost (``disk_full``), never forgotten."""
        assert self.spool is not None
        whole = len(left) == 1 and left[0].payload == payload
        failed = self.spool.replace(path, [(part.payload, part.tries) for part in left], whole)
        for data, _tries in failed:
            self.drop(span_count(data), "disk_full", "the spool's disk is full")

    def _suspect_failed(self, path: Path, payload: bytes) -> bool:
        """A spooled batch failed with a 5xx its halves share. It counts against the batch
        only when Zipkin took other batches since its previous failure; at the last count the
        batch is bisected to the end (Zipkin works: a 5xx is about the content), so only the
        spans Zipkin refuses alone are lost. True when the file was settled."""
        previous = self._suspects.pop(path.name, None)
        if previous is not None and self._sent_batches > previous:
            if Spool.fails(path) + 1 >= MAX_FILE_FAILURES:
                assert self.spool is not None
                self.spool.copy_aside(path, payload)  # the whole batch, for a look
                tries = Spool.tries(path)
                tally: list[int] = []
                left = self._settle(payload, None, self._post(payload), tries, True, False,
                                    tally)
                self.counters["replayed"] += sum(tally)
                if left:
                    self._requeue(path, payload, left)
                else:
                    self.spool.remove(path)
                return True
            path = self.spool.mark_failed(path) if self.spool is not None else path
        if len(self._suspects) > 1000:  # bounded: the oldest memories go first
            self._suspects.pop(next(iter(self._suspects)))
        self._suspects[path.name] = self._sent_batches
        return False

    def _start_replayer(self) -> None:
        if self._replayer is not None and self._replayer.is_alive():
            return
        self._replayer = threading.Thread(target=self._replay_loop, name="cosyvoice-otel-spool",
                                          daemon=True)
        self._replayer.start()

    def _replay_loop(self) -> None:
        while not self._closed and self.spool is not None and self.spool.oldest() is not None:
            wait = max(0.0, self._open_until - time.monotonic(),
                       self._replay_after - time.monotonic())
            time.sleep(min(wait, MAX_BACKOFF) if wait else 0.05)
            if self._closed:
                return
            if self.replay(budget=20):
                self._replay_backoff = 1.0
            else:  # only files that fail for now (a 5xx we cannot pin yet): not in a loop
                self._replay_after = time.monotonic() + self._replay_backoff
                self._replay_backoff = min(MAX_BACKOFF, self._replay_backoff * 2)

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


__all__: Sequence[str] = ("ResilientZipkinExporter", "MAX_UNCERTAIN", "classify")
