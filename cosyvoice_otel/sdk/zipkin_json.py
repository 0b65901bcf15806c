"""One Zipkin JSON v2 encoder for every Zipkin-bound exporter (HTTP, file).

It writes what the SDK's ``JsonV2Encoder`` writes (a test compares both on varied spans, field
by field), with two deliberate differences and one speed-up:

* never ``"debug": true``: the stock encoder marks every sampled span debug, which makes Zipkin
  bypass its own collector sampling;
* tag values are not truncated (the stock exporter cuts them at 128 characters: an exception's
  stack trace would lose all but its first line);
* the same work, cheaper (issue 13): the resource's and the instrumentation scope's tags, the
  same for every span of a batch, are converted once per batch instead of once per span; the
  per-span work is one dict built inline, and the batch is dumped once with compact
  separators (fewer bytes to send, and for Zipkin to parse).

Spans arrive already redacted (``redaction.RedactingSpanExporter``), so a batch is encoded
exactly once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

logger = logging.getLogger("cosyvoice_otel.export")

_KIND = {SpanKind.INTERNAL: None, SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT",
         SpanKind.PRODUCER: "PRODUCER", SpanKind.CONSUMER: "CONSUMER"}
_COMPACT = (",", ":")


def _placeholder(value: Any) -> str:
    """What JSON cannot encode (the redactor turns such values into text before us: this is
    the encoder's own guard, so one odd value can never fail a batch)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return f"[unencodable {type(value).__name__}]"


def _sequence_tag(values: Sequence[Any]) -> str:
    out: list[str | None] = []
    for element in values:
        if isinstance(element, bool):
            out.append("true" if element else "false")
        elif isinstance(element, (int, float, str)):
            out.append(str(element))
        elif element is None:
            out.append(None)
        else:
            out.append(_placeholder(element))
    return json.dumps(out, separators=_COMPACT)


def _tags(attributes: Any) -> dict[str, str]:
    """Attribute values as Zipkin tag strings (booleans lower-case, sequences as JSON)."""
    tags: dict[str, str] = {}
    if not attributes:
        return tags
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:  # the common cases first, by exact type (no isinstance chain)
            tags[key] = value
        elif kind is bool:
            tags[key] = "true" if value else "false"
        elif kind is int or kind is float or isinstance(value, (int, float, str)):
            tags[key] = str(value)
        elif isinstance(value, (bytes, bytearray)):
            tags[key] = _placeholder(value)
        elif isinstance(value, Sequence):
            tags[key] = _sequence_tag(value)
        else:
            logger.warning("Could not serialize tag %s", key)
    return tags


class ZipkinJsonEncoder:
    def __init__(self) -> None:
        # per batch: resource and scope objects are shared by many spans
        self._constant_tags: dict[tuple[int, int], dict[str, str]] = {}

    def _shared_tags(self, span: ReadableSpan) -> dict[str, str]:
        resource, scope = span.resource, span.instrumentation_scope
        key = (id(resource), id(scope))
        tags = self._constant_tags.get(key)
        if tags is None:
            tags = _tags(resource.attributes)  # an SDK span always has a resource
            if scope is not None:
                version = scope.version or ""  # a Zipkin tag is a string, never null
                tags.update({"otel.library.name": scope.name, "otel.library.version": version,
                             "otel.scope.name": scope.name, "otel.scope.version": version})
            self._constant_tags[key] = tags
        return tags

    def _span(self, span: ReadableSpan, local: dict[str, Any]) -> dict[str, Any]:
        context = span.context
        # a finished span (the only kind an exporter gets) has its times and context
        assert context is not None and span.start_time is not None and span.end_time is not None
        start = span.start_time
        encoded: dict[str, Any] = {
            "traceId": f"{context.trace_id:032x}", "id": f"{context.span_id:016x}",
            "name": span.name, "timestamp": (start + 500) // 1000,
            "duration": (span.end_time - start + 500) // 1000, "localEndpoint": local,
            "kind": _KIND[span.kind]}
        tags = _tags(span.attributes)
        tags.update(self._shared_tags(span))
        status = span.status.status_code
        if status is not StatusCode.UNSET:
            tags["otel.status_code"] = status.name
            if status is StatusCode.ERROR:
                tags["error"] = span.status.description or ""
        for name, count in (("attributes", span.dropped_attributes),
                            ("events", span.dropped_events), ("links", span.dropped_links)):
            if count:
                tags[f"otel.dropped_{name}_count"] = str(count)
        if tags:
            encoded["tags"] = tags
        if span.events:
            encoded["annotations"] = [
                {"timestamp": (event.timestamp + 500) // 1000,
                 "value": json.dumps({event.name: dict(event.attributes or {})},
                                     sort_keys=True, default=_placeholder)}
                for event in span.events]
        if span.parent is not None:
            encoded["parentId"] = f"{span.parent.span_id:016x}"
        return encoded

    def to_dicts(self, spans: Sequence[ReadableSpan]) -> list[dict]:
        if not spans:
            return []
        local = {"serviceName": spans[0].resource.attributes.get(SERVICE_NAME, "unknown")}
        self._constant_tags = {}
        try:
            return [self._span(span, local) for span in spans]
        finally:
            self._constant_tags = {}  # never keep a batch's resources alive

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """A JSON v2 list, as Zipkin's POST /api/v2/spans reads it."""
        return json.dumps(self.to_dicts(spans), separators=_COMPACT).encode("utf-8")
