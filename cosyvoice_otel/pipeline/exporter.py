"""A Zipkin exporter that never hurts the app: redact, send, spool when Zipkin is away, replay.

Selected by ``--exporter zipkin`` (``OTEL_TRACES_EXPORTER=cosyvoice_zipkin``); the SDK's batch
processor calls it from its own thread, never from a request. Compared with the stock JSON
exporter it:

* redacts every span first (``redaction.py``) and drops ``"debug": true`` (the stock exporter
  marks every sampled span debug, bypassing Zipkin's own sampling);
* bounds every attempt: 1 s to connect, the configured timeout to answer; after a failure the
  circuit stays open for a backoff (1 s doubling to 30 s) during which batches go straight to
  the spool, so a black-holed Zipkin costs the export thread one timeout, not one per batch;
* spools batches to disk (``--spool-dir``, capped by ``--spool-max-mb``) while Zipkin is
  unreachable or answers 5xx, and replays them oldest first when it answers again;
* drops a batch Zipkin rejects with 400 (one log line each, no retry), and beyond the spool cap
  drops and counts, logging the count at most once a minute;
* never raises into the SDK.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import redaction

logger = logging.getLogger("cosyvoice_otel.export")

DEFAULT_ENDPOINT = "http://localhost:9411/api/v2/spans"
CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 30.0
DROP_LOG_INTERVAL = 60.0


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Outcome:
    SENT, REJECTED, UNAVAILABLE = "sent", "rejected", "unavailable"


class Spool:
    """Batches on disk, oldest first, under a byte cap. Files: ``<ns>-<pid>-<seq>.json``."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = 0
        directory.mkdir(parents=True, exist_ok=True)
        self.size = sum(f.stat().st_size for f in directory.glob("*.json"))

    def put(self, payload: bytes) -> bool:
        with self._lock:
            if self.size + len(payload) > self.max_bytes:
                return False
            self._seq += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.json"
            tmp = self.directory / (name + ".tmp")
            tmp.write_bytes(payload)
            tmp.replace(self.directory / name)
            self.size += len(payload)
            return True

    def oldest(self) -> Path | None:
        files = sorted(self.directory.glob("*.json"))
        return files[0] if files else None

    def remove(self, path: Path) -> None:
        with self._lock:
            try:
                size = path.stat().st_size
                path.unlink()
                self.size = max(0, self.size - size)
            except FileNotFoundError:
                pass


class ResilientZipkinExporter(SpanExporter):
    def __init__(self, endpoint: str | None = None, timeout: float | None = None,
                 spool_dir: str | None = None, spool_max_bytes: int | None = None,
                 session: requests.Session | None = None) -> None:
        self.endpoint = endpoint or os.environ.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT",
                                                   DEFAULT_ENDPOINT)
        self.timeout = timeout or _env_float("OTEL_EXPORTER_ZIPKIN_TIMEOUT", 5.0)
        spool_dir = spool_dir or os.environ.get("COSYVOICE_TRACED_SPOOL_DIR") or str(
            Path.home() / ".cache" / "cosyvoice-otel" / "spool")
        max_bytes = spool_max_bytes or int(_env_float("COSYVOICE_TRACED_SPOOL_MAX_MB", 64)
                                           * 1024 * 1024)
        # one spool per endpoint: batches must go back to the Zipkin they were meant for
        spool_path = Path(spool_dir) / hashlib.sha1(self.endpoint.encode()).hexdigest()[:12]
        self.spool: Spool | None
        try:
            self.spool = Spool(spool_path, max_bytes)
        except OSError as exc:
            logger.warning("cosyvoice-otel: spool %s unusable (%s); batches will be dropped "
                           "while Zipkin is away", spool_dir, exc)
            self.spool = None
        self.session = session or requests.Session()
        self._encoder = JsonV2Encoder()
        self._closed = False
        self._open_until = 0.0  # circuit: no network attempts before this monotonic time
        self._backoff = 1.0
        self._replay_lock = threading.Lock()
        self._replayer: threading.Thread | None = None
        self.counters = {"sent": 0, "spooled": 0, "replayed": 0, "rejected": 0, "dropped": 0}
        self._dropped_since_log = 0
        self._last_drop_log = 0.0

    # -- encoding
    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        node = NodeEndpoint()
        node.service_name = spans[0].resource.attributes.get(SERVICE_NAME, "unknown")
        encoded = json.loads(self._encoder.serialize(spans, node))
        for span, original in zip(encoded, spans, strict=True):
            span.pop("debug", None)
            redaction.redact_encoded_span(span, redaction.secrets_for(
                original.context.trace_id))
        return json.dumps(encoded, ensure_ascii=False).encode("utf-8")

    # -- network
    def _post(self, payload: bytes) -> str:
        try:
            resp = self.session.post(self.endpoint, data=payload,
                                     headers={"Content-Type": "application/json"},
                                     timeout=(CONNECT_TIMEOUT, self.timeout))
        except requests.RequestException:
            return Outcome.UNAVAILABLE
        if 200 <= resp.status_code < 300:
            return Outcome.SENT
        if resp.status_code == 400:
            logger.warning("cosyvoice-otel: Zipkin rejected a batch (400: %s); dropped",
                           resp.text[:200].strip())
            return Outcome.REJECTED
        return Outcome.UNAVAILABLE

    def _circuit_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _trip(self) -> None:
        self._open_until = time.monotonic() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    def _reset(self) -> None:
        self._open_until = 0.0
        self._backoff = 1.0

    # -- the SpanExporter contract
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            payload = self.encode(spans)
            outcome = Outcome.UNAVAILABLE if self._circuit_open() else self._post(payload)
            if outcome == Outcome.SENT:
                self.counters["sent"] += len(spans)
                self._reset()
                if self.spool is not None and self.spool.size > 0:  # no directory scan here
                    self._start_replayer()
                return SpanExportResult.SUCCESS
            if outcome == Outcome.REJECTED:
                self.counters["rejected"] += len(spans)
                return SpanExportResult.FAILURE
            self._trip()
            if self.spool is not None and self.spool.put(payload):
                self.counters["spooled"] += len(spans)
                self._start_replayer()
                return SpanExportResult.SUCCESS
            self._note_drop(len(spans))
            return SpanExportResult.FAILURE
        except Exception as exc:  # noqa: BLE001 - an exporter must never raise into the SDK
            logger.warning("cosyvoice-otel: export failed (%s: %s); batch dropped",
                           type(exc).__name__, exc)
            self._note_drop(len(spans))
            return SpanExportResult.FAILURE

    def _note_drop(self, count: int) -> None:
        self.counters["dropped"] += count
        self._dropped_since_log += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL:
            logger.warning("cosyvoice-otel: dropped %d spans (Zipkin away and spool full)",
                           self._dropped_since_log)
            self._dropped_since_log = 0
            self._last_drop_log = now

    # -- replay
    def replay(self, budget: int | None = None) -> int:
        """Send spooled batches oldest first until one fails; returns how many were sent."""
        if self.spool is None:
            return 0
        sent = 0
        with self._replay_lock:
            while budget is None or sent < budget:
                path = self.spool.oldest()
                if path is None:
                    break
                try:
                    payload = path.read_bytes()
                except OSError:
                    self.spool.remove(path)
                    continue
                outcome = self._post(payload)
                if outcome == Outcome.UNAVAILABLE:
                    self._trip()
                    break
                self.spool.remove(path)
                if outcome == Outcome.SENT:
                    self._reset()
                    sent += 1
                    self.counters["replayed"] += payload.count(b'"traceId"')
        return sent

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
        self.session.close()
