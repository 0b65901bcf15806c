"""The OpenTelemetry Collector used by the OTLP tests: built from the Go module proxy with the
official builder (``ocb``), from ``.ci/otelcol-builder.yaml`` (v0.148.0: OTLP receiver, batch
and tail_sampling processors, debug and contrib zipkin exporters).

``.ci/setup`` builds it once into the cache; ``find_binary()`` returns it or None.
"""

from __future__ import annotations

import os
from pathlib import Path

from cosyvoice_otel.tools.zipkin_server import cache_dir

COLLECTOR_VERSION = "0.148.0"


def binary_path() -> Path:
    return cache_dir() / f"otelcol-cosyvoice-{COLLECTOR_VERSION}"


def find_binary() -> Path | None:
    explicit = os.environ.get("OTELCOL_BIN")
    path = Path(explicit) if explicit else binary_path()
    return path if path.is_file() and os.access(path, os.X_OK) else None


def config_yaml(otlp_port: int, zipkin_endpoint: str | None = None,
                metrics: bool = False) -> str:
    """OTLP/HTTP in on loopback, every span printed in detail on stderr; with
    ``zipkin_endpoint``, also on to Zipkin after a tail-sampling decision (keep every trace
    with an error, and all the others too: the policies an operator would start from)."""
    if zipkin_endpoint is None:
        processors, exporters, extra = "", "[debug]", ""
    else:
        processors = "      processors: [tail_sampling, batch]\n"
        exporters = "[debug, zipkin]"
        extra = f"""\
  zipkin:
    endpoint: {zipkin_endpoint}
processors:
  batch:
    timeout: 200ms
  tail_sampling:
    decision_wait: 1s
    policies:
      - name: errors
        type: status_code
        status_code: {{status_codes: [ERROR]}}
      - name: the-rest
        type: probabilistic
        probabilistic: {{sampling_percentage: 100}}
"""
    return f"""\
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
exporters:
  debug:
    verbosity: detailed
{extra}service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
{processors}      exporters: {exporters}
""" + ("""\
    metrics:
      receivers: [otlp]
      exporters: [debug]
""" if metrics else "")
