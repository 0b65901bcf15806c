"""Metrics end to end (issue 11): traced demo servers with ``--metrics prometheus``, the real
Zipkin, and a real Prometheus (Debian's package) evaluating examples/prometheus/alerts.yml."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from cosyvoice_otel.tools import zipkin_server

from ..support.helpers import (
    BIN,
    ROOT,
    app_env,
    free_port,
    new_span_id,
    new_trace_id,
    unavailable,
    wait_until,
)
from ..support.prometheus_server import Prometheus, PrometheusError, binary

pytestmark = pytest.mark.zipkin
RULES = ROOT / "examples" / "prometheus" / "alerts.yml"
TEXT = "Metrics come from every request. 第二句。"
EXEMPLAR = re.compile(r'# \{[^}]*trace_id="([0-9a-f]{32})"[^}]*\}')
# an exemplar of the stall histogram: its trace id and the stall it observed (seconds)
STALL_EXEMPLAR = re.compile(r'^tts_playback_stall_seconds_bucket\{[^}]*\} \S+ '
                            r'# \{[^}]*trace_id="([0-9a-f]{32})"[^}]*\} (\S+)', re.M)


def need(name: str) -> str:
    exe = binary(name)
    if exe is None:
        message = f"{name} is not installed (.ci/setup installs Debian's prometheus package)"
        unavailable(message)
    return exe


def start(launch_app, zipkin, service: str, *flags: str, env: dict[str, str] | None = None):
    port, metrics_port = free_port(), free_port()
    app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint", zipkin.endpoint,
                      "--service-name", service, "--metrics", "prometheus", "--metrics-host",
                      "127.0.0.1", "--metrics-port", str(metrics_port), *flags, "--", "python",
                      "examples/server.py", "--port", str(port), "--model_dir",
                      str(start.model)], app_env(**(env or {})), port)
    app.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    return app


STREAMED = "One streamed sentence that is long enough to need several hops of audio."


def synthesize(app, headers: dict[str, str] | None = None, stream: bool = False) -> None:
    params = {"tts_text": STREAMED if stream else TEXT, "spk_id": "中文女",
              "stream_mode": str(stream).lower()}
    resp = requests.get(f"{app.url}/inference_sft", params=params, timeout=60,
                        headers=headers or {})
    assert resp.status_code == 200 and len(resp.content) > 1000


def scrape(app) -> str:
    return requests.get(app.metrics_url, headers={"Accept": "application/openmetrics-text"},
                        timeout=10).text


def total(text: str, name: str) -> float:
    """Sum of every series of a sample name (all label sets)."""
    return sum(float(line.split(" ")[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_the_rules_pass_promtool() -> None:
    promtool = need("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS: 5 rules found" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([promtool, "check", "config", str(RULES.parent / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def shortened_rules(path: Path) -> str:
    """The example's rules with test-sized windows: 5m ranges -> 15s, ``for`` -> 2s, and the
    vocoder objective 5 s -> 0.2 s (each substitution must hit, or the rule changed shape)."""
    doc = yaml.safe_load(path.read_text())
    for rule in doc["groups"][0]["rules"]:
        assert "[5m]" in rule["expr"], rule["alert"]
        rule["expr"] = rule["expr"].replace("[5m]", "[15s]")
        rule["for"] = "2s"
        if rule["alert"] == "CosyVoiceVocoderSlow":
            expr, hits = re.subn(r">\s*5\s*$", "> 0.2", rule["expr"].rstrip())
            assert hits == 1, rule["expr"]
            rule["expr"] = expr
    return yaml.safe_dump(doc)


def test_every_request_is_measured_exemplars_link_to_zipkin_and_the_vocoder_alert_fires(
        zipkin, launch_app, make_model, tmp_path) -> None:
    need("prometheus")
    start.model = make_model(3)
    # r0: the normal engine at sampling rate 0; slow: a vocoder 0.3 s slower and its streams'
    # hop 1 0.8 s slower (the listener waits), every trace kept
    r0 = start(launch_app, zipkin, "metrics-rate0", "--sampling-rate", "0", "--no-keep-errors")
    slow = start(launch_app, zipkin, "metrics-slow", "--sampling-rate", "1",
                 env={"COSYVOICE_DEMO_VOCODER_DELAY_S": "0.3",
                      "COSYVOICE_DEMO_SLOW_HOP": "1:0.8"})

    # rate 0: N requests -> a request-duration histogram with count N, and no trace in Zipkin
    n = 4
    for _ in range(n):
        synthesize(r0)
    text = scrape(r0)
    assert total(text, "tts_request_duration_seconds_count") == n
    assert total(text, "tts_requests_total") == n
    assert not EXEMPLAR.search(text)  # nothing sampled: nothing to link to
    # then one request its caller samples: once IT is in Zipkin, the export pipeline has
    # passed the n before it (one batch queue, in order), so their absence is real
    probe = new_trace_id()
    synthesize(r0, {"b3": f"{probe}-{new_span_id()}-1"})
    assert zipkin.client().wait_for_trace(probe, timeout=60)
    stored = zipkin.client().traces(service="metrics-rate0", lookback_ms=600_000)
    assert {spans[0]["traceId"] for spans in stored} == {probe}

    # rate 1: the buckets carry exemplars whose trace ids exist in Zipkin
    synthesize(slow)
    trace_ids = set(EXEMPLAR.findall(scrape(slow)))
    assert trace_ids
    client = zipkin.client()
    for trace_id in trace_ids:
        assert client.wait_for_trace(trace_id, timeout=20), trace_id

    # a real Prometheus scrapes both and evaluates the example's rules (windows shortened)
    rules = tmp_path / "alerts.yml"
    rules.write_text(shortened_rules(RULES))
    targets = [r0.metrics_url.split("/")[2], slow.metrics_url.split("/")[2]]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(rules)],
              "scrape_configs": [{"job_name": "cosyvoice",
                                  "static_configs": [{"targets": targets}]}]}
    try:
        prom = Prometheus(yaml.safe_dump(config), tmp_path)
    except PrometheusError as exc:
        unavailable(str(exc))
    stop = threading.Event()

    def load() -> None:  # steady traffic on both, as in production
        while not stop.is_set():
            for app in (r0, slow):
                try:
                    synthesize(app, stream=app is slow)
                except Exception:  # noqa: BLE001, S110 - the assertions below tell what went wrong
                    pass

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        def firing() -> list[dict]:
            return [a for a in prom.api("alerts")["alerts"]
                    if a["labels"]["alertname"] == "CosyVoiceVocoderSlow"
                    and a["state"] == "firing"]

        assert wait_until(firing, timeout=60, interval=1.0), prom.api("alerts")
        alerts = [a for a in prom.api("alerts")["alerts"]
                  if a["labels"]["alertname"] == "CosyVoiceVocoderSlow"]
        assert {a["labels"]["instance"] for a in alerts} == {targets[1]}  # never the normal one

        def stalling() -> list[dict]:
            return [a for a in prom.api("alerts")["alerts"]
                    if a["labels"]["alertname"] == "CosyVoiceStreamsStalling"
                    and a["state"] == "firing"]

        assert wait_until(stalling, timeout=60, interval=1.0), prom.api("alerts")
        assert {a["labels"]["instance"] for a in stalling()} == {targets[1]}
        # the stall histogram's exemplars of a stall (value over 0.1 s) name stalled traces
        stalled = [match[1] for match in STALL_EXEMPLAR.finditer(scrape(slow))
                   if float(match[2]) > 0.1]
        assert stalled
        spans = client.wait_for_trace(stalled[0], timeout=20)
        tags = next(sp for sp in spans if sp["name"] == "cosyvoice.inference")["tags"]
        assert int(tags["tts.playback.stalls"]) >= 1
        # Prometheus stored exemplars from the slow replica; they name traces in Zipkin
        now = time.time()
        stored = prom.api("query_exemplars", query="tts_request_duration_seconds_bucket",
                          start=now - 300, end=now)
        linked = {e["labels"]["trace_id"] for series in stored for e in series["exemplars"]}
        assert linked
        some = sorted(linked)[0]
        assert client.wait_for_trace(some, timeout=20)
    finally:
        stop.set()
        worker.join(60)
        prom.stop()


def test_tracer_health_counters_move_when_zipkin_goes_away_and_comes_back(
        launch_app, make_model, tmp_path) -> None:
    port = free_port()
    try:
        server = zipkin_server.start(port=port)
    except zipkin_server.ZipkinServerError as exc:
        unavailable(str(exc))
    start.model = make_model(3)
    app = start(launch_app, server, "metrics-health", "--spool-dir", str(tmp_path / "spool"),
                "--export-timeout", "2")

    def counter(name: str) -> float:
        return total(scrape(app), name)

    try:
        synthesize(app)
        assert wait_until(lambda: counter("cosyvoice_otel_spans_exported_total") > 0, timeout=20)
        server.stop()
        for _ in range(3):
            synthesize(app)  # the app keeps answering while Zipkin is away
        assert wait_until(lambda: counter("cosyvoice_otel_spans_spooled_total") > 0, timeout=30)
        assert counter("cosyvoice_otel_export_failures_total") > 0
        assert counter("cosyvoice_otel_spool_size_bytes") > 0
        assert counter("cosyvoice_otel_spans_replayed_total") == 0
        doctor = run_doctor(app.metrics_url)
        assert "warn  spool: " in doctor and "bytes waiting (Zipkin unreachable" in doctor
        server = zipkin_server.start(port=port)
        synthesize(app)  # a successful export starts the replay
        assert wait_until(lambda: counter("cosyvoice_otel_spans_replayed_total") > 0, timeout=60)
        assert wait_until(lambda: counter("cosyvoice_otel_spool_size_bytes") == 0, timeout=30)
        assert total(scrape(app), "cosyvoice_otel_spans_dropped_total") == 0
        doctor = run_doctor(app.metrics_url)
        assert "ok    spans dropped: none" in doctor and "ok    spool: 0 bytes" in doctor
        replayed = int(counter("cosyvoice_otel_spans_replayed_total"))
        assert f"replayed {replayed};" in doctor
    finally:
        server.stop()


def run_doctor(metrics_url: str) -> str:
    out = subprocess.run([str(BIN / "cosyvoice-traced"), "doctor", "--metrics", metrics_url],
                         capture_output=True, text=True, timeout=120, env=app_env())
    return out.stdout


def test_a_busy_metrics_port_is_one_warning_and_tracing_goes_on(zipkin, launch_app, make_model,
                                                                 tmp_path) -> None:
    import socket

    start.model = make_model(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = free_port()
        app = launch_app([str(BIN / "cosyvoice-traced"), "run", "--zipkin-endpoint",
                          zipkin.endpoint, "--service-name", "metrics-busy", "--metrics",
                          "prometheus", "--metrics-host", "127.0.0.1", "--metrics-port",
                          str(taken), "--", "python", "examples/server.py", "--port", str(port),
                          "--model_dir", str(start.model)], app_env(), port)
        synthesize(app)
        client = zipkin.client()
        assert wait_until(lambda: client.traces(service="metrics-busy", lookback_ms=600_000),
                          timeout=20)
        lines = [line for line in app.output().splitlines() if "metrics port" in line]
        assert len(lines) == 1 and f"127.0.0.1:{taken}" in lines[0], app.output()[-3000:]
        assert "Traceback" not in app.output()
