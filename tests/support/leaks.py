"""Reading back what an exporter really wrote, and finding a private text in it.

Every exporter's output is decoded to plain strings (JSON inside JSON for Zipkin annotations,
protobuf for OTLP) so a text is found whatever escaping the encoding applied on the way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MIN_SUBSTRING = 4  # the promise: a text this long is found as a substring, a shorter one as a token

# values that are ids, clocks or keys: never user content, and hex ids would match short texts
SKIP = frozenset({"traceId", "id", "parentId", "trace_id", "span_id", "parent_id", "spanId",
                  "parentSpanId", "start_time", "end_time", "timestamp", "key",
                  "startTimeUnixNano", "endTimeUnixNano", "timeUnixNano"})


def strings(value: Any) -> Iterator[str]:
    """Every string value in a decoded structure; strings holding JSON are decoded too."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIP:
                yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        if value[:1] in "[{":  # JSON inside a string (Zipkin annotations): its strings
            try:
                yield from strings(json.loads(value))
                return
            except ValueError:
                pass
        yield value


def found(text: str, output: Any) -> list[str]:
    """The strings of ``output`` that reveal ``text`` (as is, repr-escaped or URL-encoded; a
    text shorter than MIN_SUBSTRING counts only as a whole token)."""
    forms = {text, repr(text)[1:-1], quote_plus(text)}
    hits = []
    for value in strings(output):
        for form in forms:
            if len(form.strip()) < MIN_SUBSTRING:
                if re.search(rf"(?<!\w){re.escape(form)}(?!\w)", value):
                    hits.append(value)
            elif form in value:
                hits.append(value)
    return hits


def otlp_dicts(payload: bytes) -> dict:
    from google.protobuf.json_format import MessageToDict

    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    return MessageToDict(request)


def encoded_by_every_exporter(spans: list) -> dict[str, Any]:
    """The spans as each exporter encodes them, decoded back: Zipkin JSON, OTLP, console."""
    from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder

    return {
        "zipkin": json.loads(ZipkinJsonEncoder().encode(spans)),
        "otlp": otlp_dicts(encode_spans(spans).SerializeToString()),
        "console": [json.loads(span.to_json()) for span in spans],
    }
