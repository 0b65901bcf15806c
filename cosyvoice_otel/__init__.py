"""cosyvoice-otel: zero-code Zipkin tracing for CosyVoice3 voice-cloning services.

Start the unmodified app as ``cosyvoice-traced run --zipkin-endpoint URL -- python webui.py``.

Where things are:

* launching: ``cli`` (click commands), ``config`` (the option table and its one precedence
  rule), ``launcher`` (resolve the program, exec ``opentelemetry-instrument``);
* in the traced app: ``instrumentation`` (the instrumentor: stage map, span wrappers, Gradio
  bridge), ``pipeline`` (the SDK configurator, sampling and B3, keep-errors, redaction in
  front of every exporter, the Zipkin encoder and resilient exporter), ``id_generator``,
  ``file_exporter``;
* the contract: ``schema`` (span names and attributes), ``checks`` (a trace against it);
* tools: ``verify``, ``report``, ``doctor``, ``demo``, ``nginx``, with ``zipkin`` (read API),
  ``zipkin_server`` (a local Zipkin from the jar), ``collector``, ``gradio_rest``.
"""

from .version import __version__

__all__ = ["__version__"]
