"""cosyvoice-otel: zero-code Zipkin tracing for CosyVoice voice-cloning services.

Start the unmodified app as ``cosyvoice-traced run --zipkin-endpoint URL -- python webui.py``.
A fork adds its own steps to the same trees with ``cosyvoice_otel.stage(name)`` and marks
failures with ``cosyvoice_otel.fail(reason, message, **figures)`` (``instrumentation/api.py``).

Floors that only look down (tests/unit/test_layers.py reads every import):

* ground: ``settings`` (the option table, typed ``Settings``, resolved once per process:
  ``current()``), ``schema`` (span names and attributes, reasons, metrics: the docs are
  generated from it), ``stage_rows`` (what a stage row is, how a user writes one), ``masking``
  (the request texts and declared query names redaction needs), ``limits``, ``version``;
* ``instrumentation/``: WHAT gets traced: ``instrumentor`` (entry point
  ``opentelemetry_instrumentor``; the stage map and the ``PATCHES`` table, lazily, idempotently,
  reversibly), ``stage_map`` (class rows and role rows, as data), ``stage_span`` (span wrappers
  and the ``Extractor`` base), ``extractors``, ``options``, ``errors``, ``gpu_timing``,
  ``metrics``, ``gradio_bridge``, ``stream_scope``, ``routes``;
* ``sdk/``: what happens to spans, as SDK plug-ins: ``configurator`` (entry point
  ``opentelemetry_configurator``: redaction in front of every exporter, keep-errors, metrics,
  the process lifecycle), ``distro``, ``propagation`` (strict B3 propagator, defer-aware
  sampler), ``keep_errors``, ``redaction``, ``export_base`` / ``spool`` / ``zipkin_http`` /
  ``kafka_exporter`` / ``file_exporter`` / ``zipkin_json`` (export), ``lifecycle`` (span
  clock, SIGTERM flush, quiet export I/O), ``meter`` / ``prometheus`` / ``health``,
  ``id_generator``;
* ``tools/``: ``verify``, ``report``, ``doctor``, ``demo``, ``nginx``, with ``zipkin`` (read
  API client), ``zipkin_server`` (a local Zipkin from the jar), ``gradio_rest``, ``checks`` (a
  trace against the schema), ``net``;
* this package's own ``__init__`` is the public face (the API above, lazily);
* ``launcher/`` on top: ``cli`` (click commands), ``launcher`` (resolve the program, exec
  ``opentelemetry-instrument``), ``child_env`` (the settings rendered as the child's
  environment).
"""

from typing import Any

from cosyvoice_otel.version import __version__

__all__ = ["__version__", "stage", "fail", "declare_stage", "declare_reason"]
_API = frozenset({"stage", "fail", "declare_stage", "declare_reason"})


def __getattr__(name: str) -> Any:
    """The public API for an app's own stages (``instrumentation/api.py``), imported when it is
    first used: importing the package stays light (the launcher imports it at start)."""
    if name in _API:
        from cosyvoice_otel.instrumentation import api

        value = globals()[name] = getattr(api, name)  # once: later reads skip this hook
        return value
    raise AttributeError(name)
