"""The configurator the launcher selects: redaction in front of every exporter, keep-errors for
any exporter, the user-agent switch, and an SDK that cannot be set up never stops the app."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from cosyvoice_otel.sdk.configurator import add_error_keeping
from cosyvoice_otel.sdk.propagation import DeferAwareRatioSampler
from cosyvoice_otel.sdk.redaction import MASK, RedactingSpanExporter

from ..support.helpers import BIN, ROOT, app_env, free_port

TRACED = str(BIN / "cosyvoice-traced")


def hello(launch_app, *flags: str):
    port = free_port()
    return launch_app([TRACED, "run", *flags, "--", "python", "tests/support/apps/hello_fastapi.py",
                       "--port", str(port)], app_env(), port)


@pytest.mark.parametrize(("flags", "expected"), [((), "agent/1.0 CANARYUA"),
                                                 (("--no-user-agent",), MASK)])
def test_user_agent_is_kept_by_default_and_masked_on_request(launch_app, tmp_path, flags,
                                                             expected) -> None:
    out = tmp_path / "spans.json"
    app = hello(launch_app, "--exporter", "zipkin-file", "--zipkin-file", str(out), *flags)
    requests.get(f"{app.url}/synthesize/x", headers={"User-Agent": "agent/1.0 CANARYUA"},
                 timeout=10)
    app.stop()
    servers = [s for s in json.loads(out.read_text()) if s.get("kind") == "SERVER"]
    agents = {v for s in servers for k, v in s["tags"].items() if "user_agent" in k}
    assert agents == {expected}


def test_an_sdk_that_cannot_be_set_up_is_one_warning_and_the_app_runs(launch_app) -> None:
    """An id generator name with no entry point (a typo, a stale install) makes the SDK raise
    in the configurator; the app must start and answer anyway."""
    port = free_port()
    env = app_env(OTEL_PYTHON_CONFIGURATOR="cosyvoice_otel", OTEL_PYTHON_ID_GENERATOR="no_such",
                  OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    app = launch_app([str(BIN / "opentelemetry-instrument"), str(BIN / "python"),
                      "tests/support/apps/hello_fastapi.py", "--port", str(port)], env, port)
    assert requests.get(f"{app.url}/synthesize/x", timeout=10).status_code == 200
    output = app.stop()
    assert output.count("tracing is off") == 1, output[-2000:]


def test_keep_errors_works_for_any_exporter_sharing_it() -> None:
    memory = InMemorySpanExporter()
    redacting = RedactingSpanExporter(memory)
    provider = TracerProvider(sampler=DeferAwareRatioSampler(0.0, keep_errors=True))
    provider.add_span_processor(SimpleSpanProcessor(redacting))
    add_error_keeping(provider, [redacting])
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("ok"):
        pass
    with tracer.start_as_current_span("failed") as root:
        with tracer.start_as_current_span("child"):
            pass
        root.set_status(Status(StatusCode.ERROR, "boom"))
    provider.force_flush()
    provider.shutdown()  # two users of one exporter: shut down once, when the last one does
    names = sorted(s.name for s in memory.get_finished_spans())
    assert names == ["child", "failed"]


def test_keep_errors_is_not_added_when_nothing_is_recorded_only() -> None:
    provider = TracerProvider(sampler=DeferAwareRatioSampler(1.0, keep_errors=True))
    add_error_keeping(provider, [RedactingSpanExporter(InMemorySpanExporter())])
    assert len(provider._active_span_processor._span_processors) == 0


def test_env_shows_the_configurator() -> None:
    result = subprocess.run([TRACED, "env"], env=app_env(), cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert "export OTEL_PYTHON_CONFIGURATOR=cosyvoice_otel" in result.stdout.splitlines()
