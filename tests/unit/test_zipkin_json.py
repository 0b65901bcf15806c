"""Our Zipkin JSON v2 encoder writes what the SDK's encoder writes (minus debug and tag
truncation), on spans that exercise every field; it only does it cheaper (issue 13)."""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from cosyvoice_otel.sdk.zipkin_json import ZipkinJsonEncoder


class Reference(JsonV2Encoder):
    """The SDK's encoder as our exporter configures it: no debug flag, no truncation."""

    def __init__(self) -> None:
        super().__init__(None)

    @staticmethod
    def _encode_debug(span_context: object) -> None:
        return None


def varied_spans() -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "k8s.pod": "p1",
                                                        "replicas": 3, "gpu": True}),
                              span_limits=SpanLimits(max_span_attributes=6, max_events=2,
                                                     max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("cosyvoice_otel", "1.2.3")
    other = provider.get_tracer("opentelemetry.instrumentation.asgi")
    with other.start_as_current_span("GET /x", kind=SpanKind.SERVER) as server:
        server.set_attributes({"http.status_code": 200, "http.method": "GET",
                               "long": "x" * 500})
        for kind in (SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER):
            with tracer.start_as_current_span(f"k-{kind.name}", kind=kind) as span:
                span.set_attributes({"b": False, "i": 7, "f": 0.25, "seq": [1, 2, 3],
                                     "bools": [True, False], "strs": ("a", "b")})
        with tracer.start_as_current_span("failed") as span:
            span.set_status(Status(StatusCode.ERROR, "KeyError"))
            span.add_event("exception", {"exception.type": "KeyError", "n": 2,
                                         "t": ("x", "y")})
            span.add_event("tts.chunk", {"tts.chunk.rtf": 0.5})
            span.add_event("dropped one")  # over max_events: counted
            for n in range(9):  # over max_span_attributes: counted
                span.set_attribute(f"a{n}", n)
        with tracer.start_as_current_span("ok") as span:
            span.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("empty-error") as span:
            span.set_status(Status(StatusCode.ERROR))
        # odd nanoseconds: rounding to microseconds must match (499 rounds down, 500 up)
        odd = tracer.start_span("odd-times", start_time=1_700_000_000_000_000_499,
                                attributes={"level": Level.HIGH, "kind": Tag.A,
                                            "holes": ("a", None, "b")})
        odd.add_event("unsorted", {"z": 1, "a": 2}, timestamp=1_700_000_000_000_001_499)
        odd.end(end_time=1_700_000_000_000_002_998)  # 2.499 us: 2
        linked = tracer.start_span("linked", links=[  # over max_links: counted
            trace.Link(server.get_span_context()), trace.Link(odd.get_span_context())])
        linked.end()
    # a second resource in the same batch: its tags are its own
    bare = TracerProvider(resource=Resource({"k": "v"}))  # no service.name
    bare.add_span_processor(SimpleSpanProcessor(memory))
    bare.get_tracer("other").start_span("elsewhere").end()
    return list(memory.get_finished_spans())


class Level(int):
    HIGH: Level


Level.HIGH = Level(3)


class Tag(str):
    A: Tag


Tag.A = Tag("a")


def test_same_fields_as_the_sdk_encoder() -> None:
    spans = varied_spans()
    node = NodeEndpoint()
    node.service_name = "svc"
    expected = json.loads(Reference().serialize(spans, node))
    ours = json.loads(ZipkinJsonEncoder().encode(spans))
    # the reference names one local endpoint per batch; the last span came from elsewhere
    for span in ours:
        span["localEndpoint"] = {"serviceName": "svc"}
    assert ours == expected
    assert len(ours) == 11 and "debug" not in json.dumps(ours)
    by_name = {span["name"]: span for span in ours}
    assert by_name["GET /x"]["tags"]["long"] == "x" * 500  # not cut at 128
    assert by_name["failed"]["tags"]["otel.dropped_attributes_count"] == "3"
    assert ZipkinJsonEncoder().to_dicts(spans[:-1]) == expected[:-1]
    assert ZipkinJsonEncoder().to_dicts([]) == []
    odd = by_name["odd-times"]
    assert (odd["timestamp"], odd["duration"]) == (1_700_000_000_000_000, 2)
    assert by_name["linked"]["tags"]["otel.dropped_links_count"] == "1"
    assert odd["tags"]["holes"] == '["a",null,"b"]' and odd["tags"]["level"] == "3"
    assert odd["annotations"][0] == {"timestamp": 1_700_000_000_000_001,
                                     "value": '{"unsorted": {"a": 2, "z": 1}}'}
    elsewhere = ZipkinJsonEncoder().to_dicts(spans[-1:])[0]
    assert elsewhere["localEndpoint"] == {"serviceName": "unknown"}
    assert elsewhere["tags"]["otel.scope.name"] == "other" and elsewhere["tags"]["k"] == "v"
    assert "k8s.pod" in by_name["ok"]["tags"] and "k8s.pod" not in elsewhere["tags"]
    payload = ZipkinJsonEncoder().encode(spans)
    assert payload == json.dumps(ours, separators=(",", ":")).encode()  # compact, one pass


def test_a_batch_keeps_nothing_alive() -> None:
    encoder = ZipkinJsonEncoder()
    encoder.encode(varied_spans())
    assert encoder._constant_tags == {}
