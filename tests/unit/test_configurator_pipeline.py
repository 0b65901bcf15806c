"""The pipeline the configurator builds, in a fresh process with the launcher's environment
(issue 31: its lines ran only in the launched apps of the e2e tests): each configured exporter
sits behind the redacting exporter in a batch processor, its spans reach the backend (here the
Zipkin JSON file), and the batch queue's drops are counted in the tracer-health metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cosyvoice_otel import settings
from cosyvoice_otel.launcher import child_env
from cosyvoice_otel.tools.net import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, urllib.request
from opentelemetry import trace
from cosyvoice_otel.sdk import configurator

configurator.CosyVoiceConfigurator()._configure()
provider = trace.get_tracer_provider()
with trace.get_tracer("t").start_as_current_span("synthesis"):
    pass
processors = provider._active_span_processor._span_processors
print(" ".join(f"{type(p).__name__}({type(p.span_exporter).__name__})" for p in processors))
processors[0]._batch_processor._metrics.drop_items(3)  # the SDK's own call when its queue is full
provider.force_flush()
page = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print([line for line in page.splitlines() if 'reason="queue_full"' in line][0])
"""


def test_spans_reach_the_exporter_through_redaction_and_queue_drops_are_counted(
        tmp_path) -> None:
    port, out = free_port(), tmp_path / "spans.json"
    given = {"exporter": "zipkin-file", "zipkin_file": str(out), "metrics": "prometheus",
             "metrics_host": "127.0.0.1", "metrics_port": str(port)}
    rendered = child_env.render(settings.Settings.resolve(given, environ={}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(port)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**env, **rendered})
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # every part set up: no "keep-errors is off", no other warning
    chain, dropped = done.stdout.splitlines()
    assert chain == "BatchSpanProcessor(RedactingSpanExporter)"
    assert dropped == 'cosyvoice_otel_spans_dropped_total{reason="queue_full"} 3.0'
    (span,) = json.loads(out.read_text())
    assert span["name"] == "synthesis"


def test_the_kafka_exporter_is_given_its_settings(process_settings) -> None:
    from cosyvoice_otel.sdk import configurator
    from cosyvoice_otel.sdk.kafka_exporter import KafkaZipkinExporter

    chosen = process_settings({"COSYVOICE_TRACED_EXPORTER": "kafka",
                               "COSYVOICE_TRACED_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
                               "COSYVOICE_TRACED_KAFKA_TOPIC": "voice-spans"})
    row = configurator.EXPORTERS_BY_NAME[chosen.exporter]
    assert row.target.endswith(f":{KafkaZipkinExporter.__name__}")
    assert row.args(chosen) == {"bootstrap_servers": "k1:9092,k2:9092", "topic": "voice-spans",
                                "spool_dir": chosen.spool_root,
                                "spool_max_bytes": chosen.spool_max_bytes}


FAILING_SDK = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from opentelemetry import trace
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from cosyvoice_otel.sdk import configurator

def broken(self, **kwargs):
    raise RuntimeError("no exporter entry point")

_OTelSDKConfigurator._configure = broken
configurator.CosyVoiceConfigurator()._configure()
print("provider", type(trace.get_tracer_provider()).__name__)
import signal
print("sigterm", "untouched" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else "ours")
"""


def test_an_sdk_that_cannot_be_set_up_is_one_warning_and_the_app_runs(tmp_path) -> None:
    rendered = child_env.render(settings.Settings.resolve({"exporter": "none"}, environ={}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSYVOICE_"))}
    done = subprocess.run([sys.executable, "-c", FAILING_SDK], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**env, **rendered})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "cosyvoice-otel: tracing is off: the OpenTelemetry SDK could not be set up "
        "(RuntimeError: no exporter entry point)",
        "provider ProxyTracerProvider",  # nothing half set up: no lifecycle, no keep-errors
        "sigterm untouched"]  # no exit flush installed for a tracing that is off
