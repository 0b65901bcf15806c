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
import threading
from collections.abc import Callable
from contextvars import Token
from typing import Any, cast

from opentelemetry import context, trace

from cosyvoice_otel import masking
from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import note_error
from cosyvoice_otel.instrumentation.stage_span import (
    STAGE_KEY,
    Call,
    Extractor,
    StageSpan,
    StageWrapper,
)
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
# bad names and reasons warned about, bounded: a dynamic name (built from a request's text)
# must not grow memory or the log without end
MAX_WARNED = 64
_WARNED: set[str] = set()


def _warn_once(value: Any, message: str) -> None:
    """One warning per bad name, at most ``MAX_WARNED`` in all (then one line saying so). The
    name is shown cut to ``MAX_NAME`` and masked with the current request's texts: a name made
    of the request's text must not carry it into the log."""
    if len(_WARNED) > MAX_WARNED:
        return
    shown = repr(value)[:s.MAX_NAME + 2] if isinstance(value, str) else type(value).__name__
    if shown in _WARNED:
        return
    _WARNED.add(shown)
    if len(_WARNED) > MAX_WARNED:
        logger.warning("cosyvoice-otel: more than %d bad stage names or reasons; no more are "
                       "logged (they still get no span / 'invalid_reason')", MAX_WARNED)
        return
    span_context = trace.get_current_span().get_span_context()
    pattern = masking.pattern_for(span_context.trace_id) if span_context.is_valid else None
    if pattern is not None:
        shown = pattern.sub(masking.MASK, shown)
    logger.warning("cosyvoice-otel: " + message, shown)


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
    if isinstance(name, str) and len(name) <= s.MAX_NAME and s.NAME_RULE.match(name):
        return True
    _warn_once(name, "bad stage name %s (lower-case words joined by '_' or '.', at most "
               f"{s.MAX_NAME} characters, e.g. emotion_tagging); that stage gets no span")
    return False


class stage:  # noqa: N801 - used like a function: ``with stage(...)``, ``@stage(...)``
    """A stage span under the current request (a context manager), or around every call of a
    function, generator or coroutine (a decorator). See the module docstring."""

    __slots__ = ("name", "attributes", "_open")

    def __init__(self, name: str, **attributes: Any) -> None:
        self.name = name
        self.attributes = attributes
        # what each entry opened (one object may be entered by several threads or tasks, and
        # nested): (its stage, the context token, the entering thread), closed by its own exit
        self._open: list[tuple[StageSpan, Token[context.Context], int]] | None = None

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
            opened = StageSpan(active.tracer, self.name, parent, None, self.attributes,
                               active.options)
            token = context.attach(opened.ctx)
        except Exception as exc:  # noqa: BLE001
            note_error(f"stage {self.name}", exc)
            return None
        if self._open is None:
            self._open = []
        self._open.append((opened, token, threading.get_ident()))
        return opened

    def _pop(self) -> tuple[StageSpan, Token[context.Context]] | None:
        """The entry this exit closes: the one whose stage is current here (threads and tasks
        each see their own), else this thread's latest."""
        entries = self._open
        if not entries:
            return None
        current = context.get_value(STAGE_KEY)
        me = threading.get_ident()
        chosen = next((e for e in reversed(entries) if e[0] is current), None) or next(
            (e for e in reversed(entries) if e[2] == me), None)
        if chosen is None:
            return None
        try:
            entries.remove(chosen)
        except ValueError:
            return None
        return chosen[0], chosen[1]

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self._open:
            return
        try:
            entry = self._pop()
        except Exception as err:  # noqa: BLE001
            note_error("stage exit", err)
            return
        if entry is None:
            return
        stage_span, token = entry
        try:
            context.detach(token)
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
                    active.tracer, row, _ARGS, active.options, {}, generator,
                    lambda: _active is active)
            return wrapper(func, None, args, kwargs)

        return call


class _Arguments(Extractor):
    """A decorated function's arguments are the request's own values (a ``rewrite(text)``
    that fails before any engine stage quotes its text in the exception): registered for
    masking when the stage starts."""

    name = "app_arguments"

    def start(self, stage: StageSpan, call: Call) -> None:
        masking.remember(stage.span.get_span_context().trace_id,
                         (*call.args, *call.kwargs.values()))


_ARGS = _Arguments()


def fail(reason: str, message: str = "", **figures: Any) -> None:
    """Mark the current stage failed with a normalised reason (``error.type``) and an event
    carrying the figures (numbers and short strings that describe the failure, never content).
    Nothing happens outside a stage."""
    try:
        current = cast("StageSpan | None", context.get_value(STAGE_KEY))
        if current is None or current.ended:
            return
        if not isinstance(reason, str) or not s.NAME_RULE.match(reason) or len(
                reason) > s.MAX_NAME:
            _warn_once(reason, "bad error reason %s (lower-case words joined by '_'); "
                               "recorded as 'invalid_reason'")
            reason = "invalid_reason"
        current.failed = True
        current.reason = reason  # an exception raised next keeps this reason (stage_span)
        current.mark_error(reason, message or reason, figures)
    except Exception as exc:  # noqa: BLE001
        note_error("fail", exc)
