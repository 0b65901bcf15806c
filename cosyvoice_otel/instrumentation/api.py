"""The third way in: a fork's own steps as stage spans of the same request trees.

    import cosyvoice_otel

    cosyvoice_otel.declare_stage("emotion_tagging", "tags the text with an emotion")
    cosyvoice_otel.declare_reason("asr_empty_result", "the transcriber returned no text")

    with cosyvoice_otel.stage("emotion_tagging", labels=3):
        ...
        if not transcript:
            cosyvoice_otel.fail("asr_empty_result", "ASR returned empty result", snr_db=4.2)

    @cosyvoice_otel.stage("dialect_rewrite")      # a function, a generator or a coroutine
    def rewrite(text): ...

A stage opens a span under the current request the way the stage map does: a ``StageSpan``
(the same wrapper, never raising into the app), current while its code runs, with the
request's registered texts masked in its attributes, events and status, the stage histogram
recorded when ``--metrics`` is on, and the trace's sampling decision obeyed (an unsampled
request exports nothing, unless keep-errors claims a failed trace). Outside a request (no
current span) it does nothing, and so it does when tracing is off or the app was not started
by the launcher: a shared no-op, costing about an attribute lookup.

``fail(reason, message, **figures)`` marks the current stage as the seed article asks: status
ERROR with the normalised ``reason`` as ``error.type`` (on the stage and on the request's top
span, so ``annotationQuery=error`` finds it), and an event named ``message`` with the figures.
Names follow the schema's rule (lower-case words joined by ``_`` or ``.``); a stage or reason
nobody declared still works, but the metrics label it ``undeclared`` and ``schema`` does not
list it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace

from cosyvoice_otel import schema as s
from cosyvoice_otel.instrumentation.errors import note_error
from cosyvoice_otel.instrumentation.stage_span import STAGE_KEY, Extractor, StageSpan, StageWrapper
from cosyvoice_otel.stage_rows import Stage

logger = logging.getLogger("cosyvoice_otel")

__all__ = ["stage", "fail", "declare_stage", "declare_reason"]

declare_stage = s.declare_stage
declare_reason = s.declare_reason
SCOPE = "cosyvoice_otel.stage"  # not our scope: the app's attributes are masked like any


class _Active:
    __slots__ = ("tracer", "options")

    def __init__(self, tracer: trace.Tracer, options: Any) -> None:
        self.tracer, self.options = tracer, options


_active: _Active | None = None
_WARNED: set[str] = set()


def activate(tracer_provider: Any, options: Any) -> None:
    """The instrumentor turns the API on (its tracer provider, its options)."""
    global _active
    from cosyvoice_otel.version import __version__

    _active = _Active(trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider),
                      options)


def deactivate() -> None:
    global _active
    _active = None


def _named(name: str) -> bool:
    try:
        s.check_name(name)
    except ValueError as exc:
        if name not in _WARNED:
            _WARNED.add(name)
            logger.warning("cosyvoice-otel: %s; that stage gets no span", exc)
        return False
    return True


class stage:  # noqa: N801 - used like a function: ``with stage(...)``, ``@stage(...)``
    """A stage span under the current request (a context manager), or around every call of a
    function, generator or coroutine (a decorator). See the module docstring."""

    __slots__ = ("name", "attributes", "_stage", "_token")

    def __init__(self, name: str, **attributes: Any) -> None:
        self.name = name
        self.attributes = attributes
        self._stage: StageSpan | None = None
        self._token: object = None

    def __enter__(self) -> StageSpan | None:
        active = _active
        if active is None:
            return None
        try:
            parent = context.get_current()
            if not trace.get_current_span(parent).get_span_context().is_valid:
                return None  # outside a request: no trace of its own
            if not _named(self.name):
                return None
            self._stage = StageSpan(active.tracer, self.name, parent, None, self.attributes,
                                    active.options)
            self._token = context.attach(self._stage.ctx)
        except Exception as exc:  # noqa: BLE001
            note_error(f"stage {self.name}", exc)
            self._stage = None
        return self._stage

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        stage_span, self._stage = self._stage, None
        if stage_span is None:
            return
        try:
            context.detach(self._token)
        except Exception as err:  # noqa: BLE001
            note_error("stage detach", err)
        if exc is not None:
            stage_span.fail(exc)
        stage_span.end()

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        name, attributes = self.name, self.attributes
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def coroutine(*args: Any, **kwargs: Any) -> Any:
                with stage(name, **attributes):
                    return await func(*args, **kwargs)

            return coroutine
        generator = inspect.isgeneratorfunction(func)
        row = Stage(func.__module__, func.__qualname__, name, "none",
                    tuple(attributes.items()))
        wrappers: dict[int, StageWrapper] = {}  # per activation: its tracer and options

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            active = _active
            if active is None or not _named(name):
                return func(*args, **kwargs)
            if not trace.get_current_span().get_span_context().is_valid:
                return func(*args, **kwargs)
            wrapper = wrappers.get(id(active))
            if wrapper is None:
                wrappers.clear()
                wrapper = wrappers[id(active)] = StageWrapper(
                    active.tracer, row, _PLAIN, active.options, {}, generator,
                    lambda: _active is active)
            return wrapper(func, None, args, kwargs)

        return call


_PLAIN = Extractor()


def fail(reason: str, message: str = "", **figures: Any) -> None:
    """Mark the current stage failed with a normalised reason (``error.type``) and an event
    carrying the figures (numbers and short strings that describe the failure, never content).
    Nothing happens outside a stage."""
    try:
        current = context.get_value(STAGE_KEY)
        if current is None or current.ended:
            return
        if not isinstance(reason, str) or not s.NAME_RULE.match(reason) or len(
                reason) > s.MAX_NAME:
            if str(reason) not in _WARNED:
                _WARNED.add(str(reason))
                logger.warning("cosyvoice-otel: bad error reason %r (lower-case words joined "
                               "by '_'); recorded as 'invalid_reason'", reason)
            reason = "invalid_reason"
        current.failed = True
        current.mark_error(reason, message or reason, figures)
    except Exception as exc:  # noqa: BLE001
        note_error("fail", exc)
