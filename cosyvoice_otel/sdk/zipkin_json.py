"""One Zipkin JSON v2 encoder for every Zipkin-bound exporter (HTTP, file).

The SDK's encoder, minus ``"debug": true``: the stock one marks every sampled span debug,
which makes Zipkin bypass its own collector sampling. Tag values are not truncated (the SDK's
encoder cuts them at 128 characters unless told otherwise, as the stock exporter does: an
exception's stack trace would lose all but its first line). Spans arrive already redacted
(``redaction.RedactingSpanExporter``), so a batch is encoded exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import ReadableSpan


class ZipkinJsonEncoder(JsonV2Encoder):
    def __init__(self, max_tag_value_length: int | None = None) -> None:
        super().__init__(max_tag_value_length)

    @staticmethod
    def _encode_debug(span_context: object) -> None:
        return None  # never "debug": Zipkin's own sampling stays in charge

    @staticmethod
    def _endpoint(spans: Sequence[ReadableSpan]) -> NodeEndpoint:
        node = NodeEndpoint()
        node.service_name = spans[0].resource.attributes.get(SERVICE_NAME, "unknown")
        return node

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """A JSON v2 list, as Zipkin's POST /api/v2/spans reads it."""
        return self.serialize(spans, self._endpoint(spans)).encode("utf-8")

    def to_dicts(self, spans: Sequence[ReadableSpan]) -> list[dict]:
        local = self._encode_local_endpoint(self._endpoint(spans))
        return [self._encode_span(span, local) for span in spans]
