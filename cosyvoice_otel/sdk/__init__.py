"""What the traced process does with spans: SDK setup, sampling, redaction, export.

``configurator`` (the ``opentelemetry_configurator`` entry point) sets the SDK up and puts
``redaction.RedactingSpanExporter`` in front of every exporter; ``propagation`` holds the strict
B3 propagator and the defer-aware sampler; ``keep_errors`` exports failed traces the ratio
dropped; ``zipkin_json`` is the one Zipkin encoder; ``exporter`` sends Zipkin JSON v2 with
bounded timeouts, splits what Zipkin finds too large, spools to disk while Zipkin is away and
replays later.
"""
