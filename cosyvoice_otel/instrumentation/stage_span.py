"""Span wrappers for stage targets: plain calls and generators, thread- and stream-safe.

``StageSpan`` is one live span plus what its extractor accumulates. It travels in the OTel
``Context`` (under ``STAGE_KEY``) next to the span, so a child stage finds its parent stage even
in the LLM worker thread (the threading instrumentation carries the context there).

Rules the wrappers keep:

* A generator's span starts at the first ``next()``, ends exactly once (exhaustion, error,
  ``close()``, or garbage collection of an abandoned stream, then with
  ``cosyvoice.abandoned=true``), and is attached as current ONLY while the generator's own
  code runs, never across a ``yield``: each step attaches and detaches in the same call, so a
  step resumed in another thread or context (Gradio, Starlette) is safe.
* Tracing never raises into the app: every tracing step runs inside ``try``; a failure is
  counted in ``ERRORS`` and logged (once per place, ``errors.note_error``), and the app's call
  goes on untraced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Status, StatusCode

from cosyvoice_otel import schema as s
from cosyvoice_otel.errors import ERRORS, note_error
from cosyvoice_otel.instrumentation.gpu_timing import torch_cuda

if TYPE_CHECKING:  # for types only
    from cosyvoice_otel.instrumentation.gpu_timing import GpuMark
    from cosyvoice_otel.instrumentation.options import Options
    from cosyvoice_otel.stage_rows import Role, Stage

__all__ = ["ERRORS", "note_error", "Call", "Extractor", "StageSpan", "StageWrapper"]

STAGE_KEY = context.create_key("cosyvoice-otel-stage")
# A list in the context of a request scope (a Gradio event run): every stage started under it
# registers there, so the scope can end the spans of streams its consumer abandoned.
OPEN_STAGES_KEY = context.create_key("cosyvoice-otel-open-stages")


class Call:
    """The intercepted call, with arguments readable by name (positions precomputed)."""

    __slots__ = ("instance", "args", "kwargs", "positions")

    def __init__(self, instance: Any, args: tuple, kwargs: dict, positions: dict[str, int]):
        self.instance, self.args, self.kwargs, self.positions = instance, args, kwargs, positions

    def arg(self, name: str, default: Any = None) -> Any:
        if name in self.kwargs:
            return self.kwargs[name]
        index = self.positions.get(name)
        if index is not None and index < len(self.args):
            return self.args[index]
        return default

    def replace(self, name: str, value: Any) -> None:
        """Pass ``value`` for argument ``name`` instead (an extractor's ``rewrite``)."""
        index = self.positions.get(name)
        if name not in self.kwargs and index is not None and index < len(self.args):
            self.args = (*self.args[:index], value, *self.args[index + 1:])
        else:
            self.kwargs = {**self.kwargs, name: value}

    def first(self, default: Any = None) -> Any:
        return self.args[0] if self.args else next(iter(self.kwargs.values()), default)


class Extractor:
    """Reads sizes, counts and durations from a stage's call; never content. Every hook is
    optional and runs only while the span records, inside the wrapper's ``try``:
    ``rewrite(call)`` may replace arguments of a generator call before it is made;
    ``start(stage, call)`` before the call; ``first_item`` / ``item`` per yielded item (only
    for what needs its value: the wrapper counts items itself); ``end(stage, result)`` after a
    completed call (``result`` is None for a generator); ``close(stage, reason)`` on EVERY end
    (completed, error, interrupted). The implementations are ``extractors.py``."""

    name = "none"
    closes = False  # set by subclasses that define close()

    def rewrite(self, call: Call) -> None:
        """The default does nothing (the wrapper then skips it)."""

    def start(self, stage: StageSpan, call: Call) -> None:
        pass

    def item(self, stage: StageSpan, item: Any) -> None:
        """Every yielded item (an audio chunk, a text token)."""

    def first_item(self, stage: StageSpan, item: Any) -> None:
        """The first yielded item only (a first-token time)."""

    def end(self, stage: StageSpan, result: Any) -> None:
        pass

    def close(self, stage: StageSpan, reason: str) -> None:
        """Every end (completed, error, interrupted)."""


def _overrides(extractor: Extractor, hook: str) -> bool:
    """The extractor defines ``hook`` itself (duck-typed extractors may lack the base)."""
    found = getattr(type(extractor), hook, None)
    return callable(found) and found is not getattr(Extractor, hook)


def span_clock_now(span: Any) -> int:
    """Now, on the clock the span started on: the SDK-side lifecycle times every span on the
    monotonic clock placed on the wall clock (``sdk/lifecycle.py`` keeps ``_cosyvoice_mono``
    on the span); a span ended later (by the GPU resolver) must say when it ended HERE."""
    at = _on_span_clock(span, time.monotonic_ns())
    return at if at is not None else time.time_ns()


def span_clock_at(span: Any, mono_s: float) -> int | None:
    """An instant of ``time.monotonic()`` (seconds) on the span's clock (ns), so an event is
    stamped when what it tells happened, not when it was written; None without the span
    clock (the SDK then stamps it)."""
    return _on_span_clock(span, int(mono_s * 1e9))


def _on_span_clock(span: Any, mono_ns: int) -> int | None:
    """A monotonic instant (ns) on the span's clock: its wall start plus the monotonic time
    since it started; None when the span clock did not stamp it."""
    mono = getattr(span, "_cosyvoice_mono", None)
    began = getattr(span, "_start_time", None)
    if mono is None or began is None:
        return None
    return began + mono_ns - mono


class StageSpan:
    """One stage's span, its context, its parent stage and the counters its extractor keeps."""

    __slots__ = ("name", "span", "ctx", "parent", "instance", "counters", "started", "ended",
                 "options", "request_span", "failed", "on_end", "scope", "count", "gpu",
                 "reason", "part", "finished", "timeline")

    def __init__(self, tracer: trace.Tracer, name: str, parent_ctx: context.Context,
                 instance: Any, attributes: dict[str, Any], options: Options,
                 part: str | None = None) -> None:
        self.name = name
        self.instance = instance
        self.options = options
        self.parent = cast("StageSpan | None", context.get_value(STAGE_KEY, parent_ctx))
        self.span = tracer.start_span(name, context=parent_ctx, attributes=attributes)
        self.ctx = context.set_value(STAGE_KEY, self,
                                     trace.set_span_in_context(self.span, parent_ctx))
        self.counters: dict[str, Any] = {}
        self.count = 0  # items a generator stage yielded (the wrapper counts them)
        self.started = time.monotonic()
        self.finished: float | None = None  # monotonic, when end() ran
        self.part = part  # the pipeline part it is (schema.EXTRACTOR_PARTS), for listener.py
        # the request's stages in start order (the inference extractor makes the list; every
        # stage under it adds itself): where the first chunk's and a late chunk's time went
        self.timeline: list[StageSpan] | None = (self.parent.timeline if self.parent is not None
                                                 else None)
        if self.timeline is not None and part is not None:
            self.timeline.append(self)
        self.ended = False
        self.failed = False
        self.reason: str | None = None  # declared by the app's fail(): wins over an exception
        # the extractor's ``close(stage, reason)``: runs once on EVERY end (completed, error,
        # or interrupted: a stream abandoned, closed early or ended by its request's scope)
        self.on_end: Callable[[StageSpan, str], None] | None = None
        # the request's top span (gradio.event or the HTTP server span): errors are shown there
        self.request_span: trace.Span = (self.parent.request_span if self.parent is not None
                                         else trace.get_current_span(parent_ctx))
        # the request scope this stage runs in: its parent's, or (a generator made in one
        # place and first stepped in another: a StreamingResponse body) the current one
        scope = cast("list[StageSpan] | None", context.get_value(OPEN_STAGES_KEY, parent_ctx))
        if scope is None and self.parent is not None:
            scope = self.parent.scope  # a child stage belongs to its parent's request
        if scope is None:
            scope = cast("list[StageSpan] | None", context.get_value(OPEN_STAGES_KEY))
        self.scope: list[StageSpan] | None = scope
        if scope is not None:
            scope.append(self)
        self.gpu: GpuMark | None = None
        if options.cuda_sync:
            _cuda_reset_peak()
        elif options.gpu_timing is not None:
            self.gpu = options.gpu_timing.start()

    def find(self, name: str) -> StageSpan | None:
        """The nearest enclosing stage (or self) with this span name."""
        stage: StageSpan | None = self
        while stage is not None and stage.name != name:
            stage = stage.parent
        return stage

    def fail(self, exc: BaseException) -> None:
        """The stage ends with ``exc``. Its ``error.type`` is the reason the app declared with
        ``fail()`` in this stage or in one the exception came through (record the reason, then
        raise: the natural shape), else the exception's class name. The full stack trace is
        recorded once, on the innermost stage; the stages it passes through on its way out
        record it without (a thousand nested stages would each format the whole stack)."""
        self.failed = True
        try:
            reason = self.reason or getattr(exc, REASON_ATTR, None)
            if getattr(exc, RECORDED_ATTR, False):
                self.span.add_event("exception", {
                    "exception.type": _qualified(exc), "exception.message": str(exc),
                    "exception.stacktrace": "recorded on the innermost stage span",
                    "exception.escaped": "True"})
            else:
                self.span.record_exception(exc, escaped=True)
                _tag(exc, RECORDED_ATTR, True)
            if reason:
                _tag(exc, REASON_ATTR, reason)  # the stages and request above keep it too
            self.mark_error(reason or type(exc).__name__)
        except Exception as err:  # noqa: BLE001
            note_error("StageSpan.fail", err)

    def mark_error(self, reason: str, event: str | None = None,
                   values: dict[str, Any] | None = None) -> None:
        """Status ERROR with a stable ``error.type``, on this span and on the request's top
        span (so Zipkin's ``annotationQuery=error`` finds the request); optional event."""
        for span in (self.span, self.request_span):
            if span is None or not span.is_recording():
                continue
            span.set_status(Status(StatusCode.ERROR, reason))
            span.set_attribute(s.ERROR_TYPE, reason)
        if event:
            self.span.add_event(event, values or {})

    def end(self, abandoned: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        self.finished = time.monotonic()
        recording = self.span.is_recording()
        if self.on_end is not None and recording:
            try:
                self.on_end(self, "interrupted" if abandoned else
                            "error" if self.failed else "completed")
            except Exception as err:  # noqa: BLE001
                note_error("extractor close", err)
        if recording and (self.failed or abandoned):
            try:  # what the schema requires, 0 where nothing was produced before the end
                attributes = span_attributes(self.span)
                self.span.set_attributes({key: cast(int, zero) for key, zero in
                                          s.required_zeros(self.name).items()
                                          if key not in attributes})
            except Exception as err:  # noqa: BLE001
                note_error("required attributes", err)
        if self.options.metrics is not None and recording:
            try:  # after the extractor: the request's RTF, first audio, tokens/s are written
                self.options.metrics.stage_ended(self)
            except Exception as err:  # noqa: BLE001
                note_error("metrics", err)
        try:
            if abandoned:
                self.span.set_attribute(s.ABANDONED, True)
            if self.options.cuda_sync:
                _cuda_sync_into(self.span)
            elif self.gpu is not None and self.options.gpu_timing is not None and \
                    self.options.gpu_timing.end(
                    self.span, self.gpu, span_clock_now(self.span)):
                return  # the GPU resolver ends the span once its end event has completed
            self.span.end()  # the SDK-side lifecycle makes span durations monotonic
        except Exception as err:  # noqa: BLE001
            note_error("StageSpan.end", err)


REASON_ATTR = "_cosyvoice_otel_reason"
RECORDED_ATTR = "_cosyvoice_otel_recorded"


def _tag(exc: BaseException, name: str, value: Any) -> None:
    try:
        setattr(exc, name, value)
    except (AttributeError, TypeError):
        pass  # an exception without a __dict__: its outer stages format it again


def _qualified(exc: BaseException) -> str:
    module = type(exc).__module__
    name = type(exc).__qualname__
    return name if module in ("builtins", "__main__", None) else f"{module}.{name}"


def end_abandoned(stages: list[StageSpan]) -> None:
    """End what a finished request scope left open (a stream its consumer gave up on)."""
    for stage in stages:
        if not stage.ended:
            stage.end(abandoned=True)


def enter_scope(ctx: context.Context | None = None) -> tuple[list[StageSpan], Token[context.Context]]:
    """Open a request scope (a Gradio event run, a streamed HTTP response): every stage started
    under it registers in the returned list. Give both back to ``exit_scope``."""
    scope: list[StageSpan] = []
    return scope, context.attach(context.set_value(OPEN_STAGES_KEY, scope, ctx))


def span_attributes(span: trace.Span) -> Mapping[str, Any]:
    """What a span holds so far (an SDK span's ``attributes``; none for a non-recording one)."""
    return getattr(span, "attributes", None) or {}


def exit_scope(scope: list[StageSpan], token: Token[context.Context]) -> None:
    """Close the scope: what it left open ends as abandoned (``end_reason`` interrupted)."""
    context.detach(token)
    end_abandoned(scope)


def _cuda_reset_peak() -> None:
    cuda = torch_cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def _cuda_sync_into(span: trace.Span) -> None:
    """End-of-stage GPU honesty: wait for queued kernels, record the peak memory."""
    cuda = torch_cuda()
    if cuda is None:
        return
    cuda.synchronize()
    span.set_attribute(s.CUDA_SYNCED, True)
    span.set_attribute(s.CUDA_PEAK_BYTES, int(cuda.max_memory_allocated()))


class StageWrapper:
    """The wrapt wrapper of one stage row: decides call vs generator once, at patch time."""

    def __init__(self, tracer: trace.Tracer, stage: Stage, extractor: Extractor, options: Options,
                 positions: dict[str, int], is_generator: bool,
                 enabled: Callable[[], bool],
                 adopt: Callable[[Any, tuple[Role, ...]], None] | None = None) -> None:
        self.tracer = tracer
        self.stage = stage
        self.extractor = extractor
        self.options = options
        self.positions = positions
        self.is_generator = is_generator
        self.enabled = enabled
        self.adopt = adopt  # resolves the row's roles from the call's instance
        self.attributes = dict(stage.attributes)
        self.part = s.EXTRACTOR_PARTS.get(extractor.name)  # what listener.py attributes to
        # per call and per streamed item (a token, an audio hop) only what is needed: no call
        # at all to a hook the extractor does not define
        self.rewrites = _overrides(extractor, "rewrite")
        self.closes = _overrides(extractor, "close")
        self.items = _overrides(extractor, "item")
        self.firsts = _overrides(extractor, "first_item")

    def _start(self, parent_ctx: context.Context, call: Call) -> StageSpan | None:
        try:
            if not self.enabled() or not is_instrumentation_enabled():
                return None
            parent = cast("StageSpan | None", context.get_value(STAGE_KEY, parent_ctx))
            if (parent is not None and parent.name == self.stage.span
                    and parent.instance is call.instance and not parent.ended):
                return None  # an override calling super(): one span, not two
            stage = StageSpan(self.tracer, self.stage.span, parent_ctx, call.instance,
                              self.attributes, self.options, self.part)
        except Exception as exc:  # noqa: BLE001
            note_error(f"start {self.stage.target}", exc)
            return None
        try:
            if stage.span.is_recording():
                if self.closes:
                    stage.on_end = self.extractor.close
                self.extractor.start(stage, call)
        except Exception as exc:  # noqa: BLE001
            note_error(f"extractor {self.extractor.name}.start", exc)
        return stage

    def __call__(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if self.adopt is not None and instance is not None and self.enabled():
            try:
                self.adopt(instance, self.stage.roles)
            except Exception as exc:  # noqa: BLE001
                note_error(f"roles of {self.stage.target}", exc)
        if self.is_generator:
            call = Call(instance, args, kwargs, self.positions)
            if self.rewrites and self.enabled():
                try:
                    self.extractor.rewrite(call)
                except Exception as exc:  # noqa: BLE001
                    note_error(f"extractor {self.extractor.name}.rewrite", exc)
                    call = Call(instance, args, kwargs, self.positions)
            gen = wrapped(*call.args, **call.kwargs)
            try:
                if not self.enabled():
                    return gen
                return self._traced_generator(gen, context.get_current(), call)
            except Exception as exc:  # noqa: BLE001
                note_error(f"wrap {self.stage.target}", exc)
                return gen
        stage = self._start(context.get_current(), Call(instance, args, kwargs, self.positions))
        if stage is None:
            return wrapped(*args, **kwargs)
        token = _attach(stage.ctx)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            stage.fail(exc)
            stage.end()
            raise
        finally:
            _detach(token)
        self._extract_end(stage, result)
        stage.end()
        return result

    def _extract_end(self, stage: StageSpan, result: Any) -> None:
        try:
            if stage.span.is_recording():
                self.extractor.end(stage, result)
        except Exception as exc:  # noqa: BLE001
            note_error(f"extractor {self.extractor.name}.end", exc)

    def _traced_generator(self, gen: Generator, parent_ctx: context.Context,
                          call: Call) -> Generator:
        if self.stage.late_parent:
            parent_ctx = context.get_current()
        stage = self._start(parent_ctx, call)  # runs at the first next(): the span's start
        if stage is None:
            return (yield from gen)
        recording = stage.span.is_recording()
        item_hook = self.extractor.item if self.items and recording else None
        first_hook = self.extractor.first_item if self.firsts and recording else None
        finished = False
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = _attach(stage.ctx)
                try:
                    if to_throw is not None:
                        exc, to_throw = to_throw, None
                        item = gen.throw(exc)
                    else:
                        item = gen.send(to_send)
                except StopIteration as stop:
                    finished = True
                    self._extract_end(stage, None)
                    return stop.value
                except BaseException as exc:
                    finished = True
                    stage.fail(exc)
                    raise
                finally:
                    _detach(token)
                stage.count += 1
                if first_hook is not None and stage.count == 1:
                    try:
                        first_hook(stage, item)
                    except Exception as exc:  # noqa: BLE001
                        note_error(f"extractor {self.extractor.name}.first_item", exc)
                if item_hook is not None:
                    try:
                        item_hook(stage, item)
                    except Exception as exc:  # noqa: BLE001
                        note_error(f"extractor {self.extractor.name}.item", exc)
                try:
                    to_send = yield item
                except GeneratorExit:
                    token = _attach(stage.ctx)
                    try:
                        gen.close()
                    finally:
                        _detach(token)
                    raise
                except BaseException as exc:  # noqa: BLE001 - thrown in by the consumer: forwarded
                    to_throw = exc
        finally:
            stage.end(abandoned=not finished)


def _attach(ctx: context.Context) -> Token[context.Context] | None:
    try:
        return context.attach(ctx)
    except Exception as exc:  # noqa: BLE001
        note_error("context.attach", exc)
        return None


def _detach(token: Token[context.Context] | None) -> None:
    if token is None:
        return
    try:
        context.detach(token)
    except Exception as exc:  # noqa: BLE001
        note_error("context.detach", exc)
