"""A span exporter that writes Zipkin JSON v2 to a file (the demo's fallback without Java).

The file always holds ONE JSON array of all spans exported so far, so Zipkin's UI can load it
("Upload JSON"). Selected with ``--exporter zipkin-file`` (``OTEL_TRACES_EXPORTER=
cosyvoice_zipkin_file``); the path comes from ``COSYVOICE_TRACED_ZIPKIN_FILE``. Redaction is
applied in front of it by the configurator, like for every exporter.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cosyvoice_otel.launcher.config import runtime_settings
from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder


class ZipkinFileExporter(SpanExporter):
    def __init__(self, path: str | None = None) -> None:
        self.path = path or runtime_settings().zipkin_file
        self._encoder = ZipkinJsonEncoder()
        self._lock = threading.Lock()
        self._spans: list[dict] = []
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            encoded = self._encoder.to_dicts(spans)
            with self._lock:
                self._spans.extend(encoded)
                tmp = f"{self.path}.tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(self._spans, f)
                os.replace(tmp, self.path)
        except (OSError, ValueError):
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._closed = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
