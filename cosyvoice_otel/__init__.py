"""cosyvoice-otel: zero-code Zipkin tracing for CosyVoice voice-cloning services.

Start the unmodified app as ``cosyvoice-traced run --zipkin-endpoint URL -- python webui.py``.

Rooms, by concern:

* ``launcher/``: ``cli`` (click commands), ``config`` (the option table, its one precedence
  rule, and ``runtime_settings()``: the same table read inside the traced process),
  ``launcher`` (resolve the program, exec ``opentelemetry-instrument``);
* ``instrumentation/``: WHAT gets traced: ``instrumentor`` (entry point
  ``opentelemetry_instrumentor``), ``stage_map`` (class rows and role rows, as data),
  ``stage_span`` (span wrappers), ``extractors``, ``gradio_bridge``;
* ``sdk/``: what happens to spans, as SDK plug-ins: ``configurator`` (entry point
  ``opentelemetry_configurator``: sampler, exporters, redaction in front of every exporter,
  keep-errors), ``propagation`` (strict B3 propagator, defer-aware sampler), ``redaction``,
  ``keep_errors``, ``zipkin_json`` (the one Zipkin encoder), ``exporter`` (Zipkin HTTP with
  spool), ``file_exporter``, ``id_generator``;
* ``tools/``: ``verify``, ``report``, ``doctor``, ``demo``, ``nginx``, with ``zipkin`` (read
  API client), ``zipkin_server`` (a local Zipkin from the jar), ``gradio_rest``, ``checks`` (a
  trace against the schema), ``net``;
* the contract: ``schema`` (span names and attributes, the docs are generated from it);
  ``limits`` (the seed's input limits); ``version``.
"""

from cosyvoice_otel.version import __version__

__all__ = ["__version__"]
