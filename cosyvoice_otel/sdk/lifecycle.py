"""The traced process's life, SDK side: one clock for every span, and the last spans at SIGTERM.

Installed by the configurator (``install``), which knows the exporters it built; nothing here
instruments the app.

* **One clock.** Every SDK span (HTTP ones too) is timed on the monotonic clock, placed on the
  wall clock by an anchor (wall - monotonic) that follows the wall clock only when it steps by
  more than ``ANCHOR_SLACK_NS`` (an NTP step, a resumed VM). So a child never starts before or
  ends after its parent, even when the wall clock wobbles between their starts (seen under VM
  load: a child 3.5 ms outside its parent), and timestamps stay comparable with other
  services'. Done by wrapping the SDK ``Span.start`` / ``Span.end``; a span keeps the
  monotonic time of its start in ``_cosyvoice_mono`` (``stage_span.span_clock_now`` reads it).
* **SIGTERM.** The SDK flushes only in ``atexit``, which the default SIGTERM action skips. When
  the app has no handler of its own, ours flushes the provider, then waits for the exporters
  that deliver in the background (the pipelined Zipkin batch, librdkafka's queue) and for the
  GPU resolver's spans, twice (a span that ends during the first delivery, e.g. a Gradio event
  finishing in its own thread, goes with the second), bounded by ``timeout_ms`` in all; then
  restores the default action and re-sends the signal, so the exit status is still
  "terminated by SIGTERM". An app that sets its own handler later replaces ours.
* **Quiet export.** The HTTP client under the exporters (urllib3, for ours and the SDK's OTLP)
  logs every connection at DEBUG; an app that sets its ROOT logger to DEBUG (upstream
  CosyVoice's ``file_utils`` does) would print our exports into its log. A filter on urllib3's
  loggers drops the records our export threads make (the SDK's ``Otel*`` workers, our
  ``cosyvoice-otel-*`` threads, or any thread inside ``quiet_io()``); the app's own HTTP
  logging is untouched.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

import wrapt

from cosyvoice_otel.drains import drain_all

ANCHOR_SLACK_NS = 50_000_000  # 50 ms: below it, the wall clock's wobble is ignored
FLUSH_TIMEOUT_MS = 3000


READ_SLACK_NS = 1_000_000  # 1 ms: a reading of both clocks that took longer is not trusted


class ClockAnchor:
    """wall = monotonic + offset, the offset re-read from the clocks at each span start and
    changed only when the wall clock moved by more than ``ANCHOR_SLACK_NS``. The reading is
    the wall clock between two monotonic reads; one that took over ``READ_SLACK_NS`` (the
    thread descheduled in between, which a loaded machine does for 50 ms and more) is not
    taken for a step: it would move every later span off its parent (seen: a vocoder 53 ms
    past its token2wav)."""

    def __init__(self) -> None:
        self.offset = time.time_ns() - time.monotonic_ns()

    def wall(self, mono: int) -> int:
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if after - before <= READ_SLACK_NS:
            now = wall - (before + after) // 2
            if abs(now - self.offset) > ANCHOR_SLACK_NS:
                self.offset = now  # a clock step: follow it
        return mono + self.offset


def _ours(value: object) -> TypeGuard[wrapt.FunctionWrapper[..., Any]]:
    return isinstance(value, wrapt.FunctionWrapper) and getattr(value, "_self_cosyvoice_otel",
                                                                False)


def _wrap(owner: Any, attr: str, wrapper: Callable[..., Any]) -> None:
    wrapped = wrapt.FunctionWrapper(inspect.getattr_static(owner, attr), wrapper)
    wrapped._self_cosyvoice_otel = True  # type: ignore[attr-defined]  # wrapt's _self_ slot
    setattr(owner, attr, wrapped)


def install_span_clock() -> bool:
    """Time every SDK span on one clock (idempotent). False when already installed."""
    from opentelemetry.sdk.trace import Span

    if _ours(inspect.getattr_static(Span, "start")):
        return False
    anchor = ClockAnchor()

    def start(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if args or kwargs.get("start_time") is not None:  # an explicit time is kept
            return wrapped(*args, **kwargs)
        mono = time.monotonic_ns()
        result = wrapped(start_time=anchor.wall(mono), parent_context=kwargs.get("parent_context"))
        try:
            instance._cosyvoice_mono = mono
        except Exception:  # noqa: BLE001, S110 - a span we cannot annotate keeps its clock
            pass
        return result

    def end(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not args and kwargs.get("end_time") is None:
            mono = getattr(instance, "_cosyvoice_mono", None)
            began = getattr(instance, "_start_time", None)
            if mono is not None and began is not None:
                return wrapped(end_time=began + time.monotonic_ns() - mono)
        return wrapped(*args, **kwargs)

    _wrap(Span, "start", start)
    _wrap(Span, "end", end)
    return True


def uninstall_span_clock() -> None:
    from opentelemetry.sdk.trace import Span

    for attr in ("start", "end"):
        current = Span.__dict__.get(attr)
        if _ours(current):
            setattr(Span, attr, current.__wrapped__)


_io = threading.local()
URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                   "urllib3.response", "urllib3.util.retry")
EXPORT_THREADS = ("Otel", "cosyvoice-otel")  # the SDK's workers, ours


class quiet_io:  # noqa: N801 - used like a function: ``with quiet_io(): ...``
    """Exporter I/O in this block logs nothing through urllib3 (the caller's thread)."""

    def __enter__(self) -> None:
        _io.depth = getattr(_io, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _io.depth -= 1


class DropExportIO(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_io, "depth", 0):
            return False
        return not threading.current_thread().name.startswith(EXPORT_THREADS)


def install_quiet_export_io() -> None:
    """The filter on urllib3's loggers (idempotent)."""
    for name in URLLIB3_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropExportIO) for f in logger.filters):
            logger.addFilter(DropExportIO())


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001, S110 - dying anyway; never block the exit
        pass


def flush_everything(provider: Any, drains: Iterable[Callable[[float], Any]],
                     timeout_ms: int = FLUSH_TIMEOUT_MS) -> None:
    """Flush the provider and wait for what delivers in the background, twice, bounded by
    ``timeout_ms`` in all (runs in its own thread: a hung exporter cannot hold the exit)."""
    drains = list(drains)
    deadline = time.monotonic() + timeout_ms / 1000

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    def close() -> None:
        for _ in range(2):
            for drain in drains:  # GPU-timed spans end here: before the provider's flush
                _quietly(functools.partial(_drain_for, drain, left))
            _quietly(lambda: provider.force_flush(int(left() * 1000)))
            for drain in drains:
                _quietly(functools.partial(_drain_for, drain, left))

    closing = threading.Thread(target=close, name="cosyvoice-otel-sigterm", daemon=True)
    closing.start()
    closing.join(timeout_ms / 1000)


def install_sigterm_flush(provider: Any, drains: Iterable[Callable[[float], Any]],
                          timeout_ms: int = FLUSH_TIMEOUT_MS
                          ) -> Callable[[int, Any], None] | None:
    """Our SIGTERM handler, when the app has none (main thread only). Returns it, or None."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        return None
    drains = list(drains)

    def flush_then_die(signum: int, frame: Any) -> None:
        flush_everything(provider, drains, timeout_ms)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_die)
    return flush_then_die


def _drain_for(drain: Callable[[float], object], left: Callable[[], float]) -> None:
    drain(left())  # the time left is read when the drain starts, not when it was queued


def install(provider: Any, exporters: Iterable[Any]) -> Callable[[int, Any], None] | None:
    """What the configurator installs once the SDK is set up: the span clock, quiet export
    I/O, and the SIGTERM flush that drains ``exporters`` (each exporter's ``drain(seconds)``,
    when it has one) and the GPU resolver."""
    install_span_clock()
    install_quiet_export_io()
    drains = [exporter.drain for exporter in exporters if callable(getattr(exporter, "drain",
                                                                           None))]

    # what the instrumentation registers later (the GPU timer, if it is made at all)
    return install_sigterm_flush(provider, [drain_all, *drains])
