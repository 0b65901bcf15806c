"""A streamed HTTP response is a request scope: what it leaves open ends when it does.

A FastAPI/Starlette ``StreamingResponse`` iterates the app's generator (CosyVoice's
``inference_*``) while it sends the body. When the client goes away mid-stream, Starlette stops
iterating but nothing closes the generator: its stage spans would end only when the garbage
collector finds it, or never. Wrapping ``StreamingResponse.__call__`` in a scope (the same
``OPEN_STAGES_KEY`` list the Gradio bridge uses) ends, when the response is done, every stage
that started inside it and is still open, with ``cosyvoice.abandoned=true`` and
``cosyvoice.end_reason=interrupted``. A stream that finished normally has nothing left open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cosyvoice_otel.errors import note_error
from cosyvoice_otel.instrumentation.stage_span import enter_scope, exit_scope


def streaming_response(tracer: Any, enabled: Callable[[], bool]) -> Callable[..., Any]:
    """A row of the instrumentor's patch table: ``starlette.responses``,
    ``StreamingResponse.__call__``."""

    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not enabled():
            return await wrapped(*args, **kwargs)
        try:
            scope, token = enter_scope()
        except Exception as exc:  # noqa: BLE001
            note_error("stream scope", exc)
            return await wrapped(*args, **kwargs)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            exit_scope(scope, token)

    return wrapper
