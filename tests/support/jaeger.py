"""Jaeger v1.76.0 (its v2 binary, ``cmd/jaeger``: an OpenTelemetry Collector distribution with
Jaeger's storage and query service), built from the Go module proxy by ``.ci/setup`` into the
cache; the tests start it on free loopback ports with in-memory storage and read traces back
through its query API (``/api/traces/{id}``), the API Jaeger's own UI reads.

``find_binary()`` returns it or None. Jaeger's web UI is not in the Go module (its assets are
built from jaeger-ui with npm and embedded at release time): the module's build serves a
placeholder page, so the tests read the query API, not the UI.
"""

from __future__ import annotations

import os
from pathlib import Path

from cosyvoice_otel.tools.zipkin_server import cache_dir

JAEGER_VERSION = "1.76.0"


def binary_path() -> Path:
    return cache_dir() / f"jaeger-{JAEGER_VERSION}"


def find_binary() -> Path | None:
    explicit = os.environ.get("JAEGER_BIN")
    path = Path(explicit) if explicit else binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def config_yaml(otlp_port: int, query_port: int, grpc_port: int, health_port: int) -> str:
    """OTLP/HTTP in, memory storage, the query service; no metrics endpoint (its fixed port
    would collide between test workers)."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health_port}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""
