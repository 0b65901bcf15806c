"""A span exporter that writes Zipkin JSON v2 to a file (the demo's fallback without Java).

The file always holds ONE JSON array of all spans exported so far, so Zipkin's UI can load it
("Upload JSON"). Selected with ``--exporter zipkin-file`` (``OTEL_TRACES_EXPORTER=
cosyvoice_zipkin_file``); the path comes from ``COSYVOICE_TRACED_ZIPKIN_FILE``. Redaction is
applied in front of it by the configurator, like for every exporter; its losses (a file that
cannot be written) are counted like every exporter's (``export_base``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from cosyvoice_otel.sdk.export_base import CountingExporter


class ZipkinFileExporter(CountingExporter):
    def __init__(self, path: str) -> None:
        self.path = path
        self._init_counting()
        self._lock = threading.Lock()
        self._spans: list[dict] = []

    def encode(self, spans: Sequence[ReadableSpan]) -> list[dict]:  # type: ignore[override]
        return self._encoder.to_dicts(spans)

    def _hand_over(self, payload: list[dict]) -> SpanExportResult:  # type: ignore[override]
        with self._lock:
            tmp = f"{self.path}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump([*self._spans, *payload], f)
                os.replace(tmp, self.path)
            except (OSError, ValueError) as exc:
                self.drop(len(payload), "export_error", f"cannot write {self.path} ({exc})")
                return SpanExportResult.FAILURE
            self._spans.extend(payload)
        self.counters["sent"] += len(payload)
        return SpanExportResult.SUCCESS
