"""The test's own OTLP/HTTP receiver: keeps every ``/v1/traces`` body as it arrived (port 0)."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .loopback_server import LoopbackServer, QuietHandler


class OtlpSink(LoopbackServer):
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                sink.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.reply(200, answer, "application/x-protobuf")

        super().__init__(Handler, "/v1/traces")
