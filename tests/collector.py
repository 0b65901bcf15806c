"""The OpenTelemetry Collector used by the OTLP tests: built from the Go module proxy with the
official builder (``ocb``), from ``.ci/otelcol-builder.yaml`` (OTLP receiver + debug exporter).

``.ci/setup`` builds it once into the cache; ``find_binary()`` returns it or None.
"""

from __future__ import annotations

import os
from pathlib import Path

from cosyvoice_otel.tools.zipkin_server import cache_dir

COLLECTOR_VERSION = "0.165.0"


def binary_path() -> Path:
    return cache_dir() / f"otelcol-cosyvoice-{COLLECTOR_VERSION}"


def find_binary() -> Path | None:
    explicit = os.environ.get("OTELCOL_BIN")
    path = Path(explicit) if explicit else binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def config_yaml(otlp_port: int) -> str:
    """OTLP/HTTP in on loopback, every span printed in detail on stderr."""
    return f"""\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
exporters:
  debug:
    verbosity: detailed
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""
