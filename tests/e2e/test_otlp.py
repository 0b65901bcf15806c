"""`--exporter otlp` end to end into the official OpenTelemetry Collector (OTLP/HTTP receiver),
and on to Zipkin through the Collector's contrib zipkin exporter (v0.148.0, the newest release
the Go proxy here serves).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest
import requests

from ..support import collector
from ..support.helpers import (
    BIN,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_for_port,
)

SPAN_BLOCK = re.compile(r"Trace ID\s*:\s*(?P<trace>[0-9a-f]{32})\s+Parent ID\s*:\s*(?P<parent>"
                        r"[0-9a-f]*)\s+ID\s*:\s*(?P<id>[0-9a-f]{16})\s+Name\s*:\s*(?P<name>[^\n]+)"
                        r"\s+Kind\s*:\s*(?P<kind>\w+)")


def start_collector(tmp_path, zipkin_endpoint: str | None = None, metrics: bool = False):
    binary = collector.find_binary()
    if binary is None:
        unavailable("the OpenTelemetry Collector was not built (.ci/setup builds it)",
                    "no OpenTelemetry Collector binary; run .ci/setup")
    port = free_port()
    config = tmp_path / "otelcol.yaml"
    config.write_text(collector.config_yaml(port, zipkin_endpoint, metrics))
    proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    wait_for_port(port, proc, timeout=60)
    return proc, port, output


@pytest.fixture
def otel_collector(tmp_path):
    proc, port, output = start_collector(tmp_path)
    try:
        yield port, output
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.zipkin
def test_app_to_collector_to_zipkin(zipkin, launch_app, make_model, tmp_path) -> None:
    """The sidecar layout end to end: OTLP into the Collector, tail sampling, its zipkin
    exporter into the real Zipkin; the client's trace id and the full stage tree arrive."""
    from cosyvoice_otel.tools.checks import check_synthesis

    proc, port, output = start_collector(tmp_path, zipkin.endpoint)
    try:
        app_port = free_port()
        app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "otlp",
                          "--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces",
                          "--service-name", "via-collector", "--", "python", "examples/server.py",
                          "--port", str(app_port), "--model_dir", str(make_model(3))],
                         app_env(), app_port)
        ok, failed = new_trace_id(), new_trace_id()
        for trace_id, speaker in ((ok, "中文女"), (failed, "no-such-speaker")):
            resp = requests.get(f"{app.url}/inference_sft", timeout=60,
                                params={"tts_text": "Via the Collector. 第二句。",
                                        "spk_id": speaker},
                                headers={"X-B3-TraceId": trace_id, "X-B3-SpanId": new_span_id(),
                                         "X-B3-Sampled": "1"})
            assert resp.status_code == 200 or speaker != "中文女"
        client = zipkin.client()
        spans = client.wait_for_trace(ok, lambda sp: not check_synthesis(sp, "sft", False),
                                      timeout=60)
        assert check_synthesis(spans, "sft", False) == [], "".join(output)[-3000:]
        assert {s["localEndpoint"]["serviceName"] for s in spans} == {"via-collector"}
        # a refused request (unknown speaker: the server answers 4xx) passes tail sampling too
        refused = client.wait_for_trace(failed, timeout=60)
        assert [s["tags"]["http.status_code"][0] for s in refused
                if s.get("kind") == "SERVER"] == ["4"]
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
                      "tests/support/apps/hello_fastapi.py", "--port", str(app_port)], app_env(),
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


def test_metrics_otlp_reach_the_collector(launch_app, make_model, tmp_path) -> None:
    """``--metrics otlp``: the request and stage metrics go to the OTLP endpoint's /v1/metrics
    (beside --otlp-endpoint), with their bounded labels and no request content."""
    proc, port, output = start_collector(tmp_path, metrics=True)
    try:
        app_port = free_port()
        app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--exporter", "otlp",
                          "--otlp-endpoint", f"http://127.0.0.1:{port}/v1/traces",
                          "--metrics", "otlp", "--service-name", "otlp-metrics", "--",
                          "python", "examples/server.py", "--port", str(app_port),
                          "--model_dir", str(make_model(3))],
                         app_env(OTEL_METRIC_EXPORT_INTERVAL="500"), app_port)
        text = "Metrics over OTLP, never this text. 第二句。"
        resp = requests.get(f"{app.url}/inference_sft", params={"tts_text": text,
                                                               "spk_id": "中文女"}, timeout=60)
        assert resp.status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "tts.request.duration" not in "".join(output):
            time.sleep(0.2)
        seen = "".join(output)
        assert "tts.request.duration" in seen and "tts.stage.duration" in seen, seen[-3000:]
        assert "cosyvoice_otel.spans.exported" in seen  # the tracer's health travels too
        assert "cosyvoice.mode: Str(sft)" in seen
        assert "never this text" not in seen
    finally:
        proc.terminate()
        proc.wait(20)
