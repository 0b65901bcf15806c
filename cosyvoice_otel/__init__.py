"""cosyvoice-otel: zero-code Zipkin tracing for CosyVoice3 voice-cloning services.

Start the unmodified app as ``cosyvoice-traced run --zipkin-endpoint URL -- python webui.py``.
Modules: ``config`` (settings and precedence), ``launcher`` (resolve program, exec
opentelemetry-instrument), ``cli`` (the click commands), ``zipkin`` (a read-API client and the
local Zipkin server used by tests and the demo).
"""

from .version import __version__

__all__ = ["__version__"]
