"""A small client of Zipkin's read API (``/api/v2/...``), standard library only.

Used by the tests (read traces back: the only proof of Zipkin compatibility), by the demo (print
the trace link) and by the analysis commands.

    client = ZipkinClient("http://localhost:9411")
    spans = client.wait_for_trace(trace_id, lambda spans: any(s.get("kind") == "SERVER" ...))
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

Span = dict[str, Any]


class ZipkinError(Exception):
    """Zipkin did not answer, or answered something other than what was asked for."""


def normalize(spans: Any) -> list[Span]:
    """Spans as the tools may read them, whatever Zipkin (or something posing as it) sent: a
    list of dicts, each with ``traceId``, ``id``, ``name`` (Zipkin omits an empty one),
    ``timestamp`` and ``duration`` (0 when absent or not a number), ``tags`` (a dict of
    strings) and ``kind`` (None when absent); anything that is not a span is left out."""
    if not isinstance(spans, list):
        raise ZipkinError(f"expected a list of spans, got {type(spans).__name__}")
    out: list[Span] = []
    for span in spans:
        if not isinstance(span, dict):
            continue
        tags = span.get("tags")
        clean = dict(span)
        clean["traceId"] = str(span.get("traceId") or "").lower()
        clean["id"] = str(span.get("id") or "")
        clean["name"] = span.get("name") if isinstance(span.get("name"), str) else ""
        for key in ("timestamp", "duration"):
            value = span.get(key)
            clean[key] = value if isinstance(value, (int, float)) and not isinstance(
                value, bool) else 0
        clean["tags"] = {str(k): str(v) for k, v in tags.items()} if isinstance(tags,
                                                                                dict) else {}
        clean["kind"] = span.get("kind") if isinstance(span.get("kind"), str) else None
        if "parentId" in span and not isinstance(span["parentId"], str):
            clean.pop("parentId")
        out.append(clean)
    return out


class ZipkinClient:
    """Read spans and traces from a Zipkin server (base URL without ``/api/v2``)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    @classmethod
    def from_endpoint(cls, endpoint: str, timeout: float = 5.0) -> ZipkinClient:
        """Build from the span intake URL (``http://h:9411/api/v2/spans``)."""
        parts = urllib.parse.urlsplit(endpoint)
        return cls(f"{parts.scheme}://{parts.netloc}", timeout)

    def _get(self, path: str, **query: Any) -> Any:
        query = {k: v for k, v in query.items() if v is not None}
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ZipkinError(f"GET {url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise ZipkinError(f"GET {url}: {exc}") from None

    def health(self) -> bool:
        """True when ``/health`` reports UP."""
        try:
            body = self._get("/health")
        except ZipkinError:
            return False
        return isinstance(body, dict) and body.get("status") == "UP"

    def services(self) -> list[str]:
        return self._get("/api/v2/services") or []

    def trace(self, trace_id: str) -> list[Span]:
        """All spans of one trace, or [] when Zipkin does not know it (404)."""
        return normalize(self._get(f"/api/v2/trace/{trace_id.lower()}") or [])

    def traces(self, service: str | None = None, span_name: str | None = None,
               annotation_query: str | None = None, lookback_ms: int | None = None,
               end_ts_ms: int | None = None, limit: int = 10) -> list[list[Span]]:
        traces = self._get("/api/v2/traces", serviceName=service, spanName=span_name,
                           annotationQuery=annotation_query, lookback=lookback_ms,
                           endTs=end_ts_ms, limit=limit) or []
        if not isinstance(traces, list):
            raise ZipkinError(f"expected a list of traces, got {type(traces).__name__}")
        return [spans for spans in (normalize(t) for t in traces if isinstance(t, list))
                if spans]

    def wait_for_trace(self, trace_id: str,
                       ready: Callable[[list[Span]], bool] = bool,
                       timeout: float = 30.0, interval: float = 0.25) -> list[Span]:
        """Poll until ``ready(spans)`` holds; return the last spans read (maybe incomplete)."""
        deadline = time.monotonic() + timeout
        spans: list[Span] = []
        while True:
            try:
                spans = self.trace(trace_id)
            except ZipkinError:
                spans = []
            if spans and ready(spans):
                return spans
            if time.monotonic() >= deadline:
                return spans
            time.sleep(interval)

    def ui_link(self, trace_id: str) -> str:
        return f"{self.base_url}/zipkin/traces/{trace_id.lower()}"
