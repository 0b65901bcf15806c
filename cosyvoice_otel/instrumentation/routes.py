"""What FastAPI knows of a request that tracing needs: the query names a route declares, and the
request's own values (two rows of the instrumentor's patch table).

The request's values: ``run_endpoint_function`` receives every parameter FastAPI parsed for
the endpoint (query, form, JSON body, an upload's file name). They are registered for masking
in the request's trace BEFORE the endpoint runs, so an app step that fails before any engine
stage (quoting its input in the exception) exports none of it.

The query names an app's routes declare as their API: the only query keys kept visible.

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

from opentelemetry import trace

from cosyvoice_otel import masking
from cosyvoice_otel.errors import note_error


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


def endpoint_values(tracer: Any, enabled: Callable[[], bool]) -> Callable[..., Any]:
    """``fastapi.routing.run_endpoint_function(*, dependant, values, is_coroutine)``."""

    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if enabled():
            try:
                span_context = trace.get_current_span().get_span_context()
                values = kwargs.get("values")
                if span_context.is_valid and isinstance(values, dict):
                    masking.remember(span_context.trace_id, (values,))
            except Exception as exc:  # noqa: BLE001
                note_error("fastapi run_endpoint_function", exc)
        return await wrapped(*args, **kwargs)

    return wrapper
