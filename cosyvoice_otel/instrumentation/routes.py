"""The query names an app's routes declare as their API: the only query keys kept visible.

A query key is a string the client chose (``/inference_sft?SECRET``, ``/x?SECRET=1``): the
redacting exporter masks every key and bare item of a URL but the names the matched route
declares (``masking.declare_query_names``). FastAPI knows them: a route's declared query
parameters (``APIRoute.dependant.query_params``, by alias), Gradio's own routes included
(``/gradio_api/queue/data`` declares ``session_hash``). A row of the instrumentor's patch table
(``fastapi.routing``, ``APIRoute.__init__``) reads them as each route is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cosyvoice_otel import masking
from cosyvoice_otel.instrumentation.errors import note_error


def declared_query_names(route: Any) -> list[str]:
    dependant = getattr(route, "dependant", None)
    return [getattr(param, "alias", None) or param.name
            for param in getattr(dependant, "query_params", ())]


def api_route_init(tracer: Any, enabled: Callable[[], bool]) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        result = wrapped(*args, **kwargs)
        if enabled():
            try:
                masking.declare_query_names(instance.path, declared_query_names(instance))
            except Exception as exc:  # noqa: BLE001
                note_error("fastapi APIRoute.__init__", exc)
        return result

    return wrapper
