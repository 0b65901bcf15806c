"""`--exporter otlp` end to end into the official OpenTelemetry Collector (OTLP/HTTP receiver).

Zipkin's OTLP module (io.zipkin.contrib.otel:zipkin-module-otel) is not published on Maven
Central and the Collector's zipkin exporter is not served by the Go proxy here, so the last hop
of the sidecar layout (Collector -> Zipkin) is not tested; the app -> Collector hop is.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
import requests

from . import collector
from .conftest import BIN, IN_CI, app_env, free_port, new_span_id, new_trace_id, wait_for_port

SPAN_BLOCK = re.compile(r"Trace ID\s*:\s*(?P<trace>[0-9a-f]{32})\s+Parent ID\s*:\s*(?P<parent>"
                        r"[0-9a-f]*)\s+ID\s*:\s*(?P<id>[0-9a-f]{16})\s+Name\s*:\s*(?P<name>[^\n]+)"
                        r"\s+Kind\s*:\s*(?P<kind>\w+)")


@pytest.fixture
def otel_collector(tmp_path):
    binary = collector.find_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("the OpenTelemetry Collector was not built (.ci/setup builds it)")
        pytest.skip("no OpenTelemetry Collector binary; run .ci/setup")
    port = free_port()
    config = tmp_path / "otelcol.yaml"
    config.write_text(collector.config_yaml(port))
    proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        wait_for_port(port, proc, timeout=60)
        yield port, output
    finally:
        proc.terminate()
        proc.wait(20)


def test_otlp_export_reaches_the_collector_with_the_clients_trace(otel_collector, launch_app,
                                                                  ) -> None:
    port, output = otel_collector
    app_port = free_port()
    app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "otlp",
                      "--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces",
                      "--service-name", "otlp-app", "--", "python",
                      "tests/apps/hello_fastapi.py", "--port", str(app_port)], app_env(),
                     app_port)
    trace_id, parent = new_trace_id(), new_span_id()
    resp = requests.get(f"{app.url}/synthesize/bob", timeout=10,
                        headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": parent,
                                 "X-B3-Sampled": "1"})
    assert resp.status_code == 200
    deadline = time.monotonic() + 30
    spans: list[dict] = []
    while time.monotonic() < deadline:
        spans = [m.groupdict() for m in SPAN_BLOCK.finditer("".join(output))
                 if m.group("trace") == trace_id]
        if any(s["kind"].startswith("Server") for s in spans):
            break
        time.sleep(0.2)
    server = [s for s in spans if s["kind"].startswith("Server")]
    assert len(server) == 1, "".join(output)[-3000:]
    assert server[0]["parent"] == parent
    assert server[0]["name"].strip() == "GET /synthesize/{voice}"
    assert "otlp-app" in "".join(output)  # service.name travelled as a resource attribute
