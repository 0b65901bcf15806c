"""The CosyVoice instrumentor: stage spans for the synthesis pipeline, plus the Gradio queue bridge.

``opentelemetry-instrument`` loads it by itself through the ``opentelemetry_instrumentor``
entry point (``cosyvoice-traced run`` is that plus configuration). By hand::

    from cosyvoice_otel.instrumentation import CosyVoiceInstrumentor
    CosyVoiceInstrumentor().instrument()          # reads COSYVOICE_TRACED_* like the launcher
    CosyVoiceInstrumentor().instrument(stages=[...], gradio_bridge=False, cuda_sync=True)

How it patches:

* lazily: a post-import hook per target module (upstream's webui puts its folder on
  ``sys.path`` only just before ``import cosyvoice``); a module already imported is patched at
  once;
* idempotently: a target already wrapped by us is never wrapped again, and a method a subclass
  inherits from a patched base is left alone; a subclass that OVERRIDES a patched method gets
  its own wrapper (one span per call even when the override calls ``super()``);
* by role: a row's roles (``stage_map.Role``) are resolved from the instance of each call, so
  the classes a model was actually built from are traced, whatever their names;
* reversibly: ``uninstrument()`` restores every original (hooks that fire later do nothing);
* forgivingly: a target missing from its module logs ONE warning naming it; the rest is patched.

Options (keyword > ``COSYVOICE_TRACED_*`` variable > default): ``stage_spans`` (on),
``stages`` / ``COSYVOICE_TRACED_STAGE`` (extra ``NAME=module:Class.method`` rows),
``stage_map`` / ``COSYVOICE_TRACED_STAGE_MAP`` (a TOML file), ``gradio_bridge`` (on),
``cuda_sync`` (off), ``input_limits`` (``on``: text over 200 characters or prompt audio over
15 s marks the request ERROR with ``text_too_long`` / ``invalid_input_duration``; ``off``; or
``text=N,audio=S``). Tracing only marks a violation, it never rejects the request.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from cosyvoice_otel.instrumentation import gradio_bridge, stage_map, stream_scope
from cosyvoice_otel.instrumentation import metrics as tts_metrics
from cosyvoice_otel.instrumentation.extractors import EXTRACTORS
from cosyvoice_otel.instrumentation.metrics import TtsMetrics
from cosyvoice_otel.instrumentation.stage_span import ERRORS, StageWrapper
from cosyvoice_otel.launcher.config import OPTIONS_BY_NAME, Settings, runtime_settings
from cosyvoice_otel.limits import parse_input_limits
from cosyvoice_otel.version import __version__

logger = logging.getLogger("cosyvoice_otel")

__all__ = ["CosyVoiceInstrumentor", "ERRORS"]


@dataclass(frozen=True)
class Options:
    """What the wrappers and extractors read, resolved once per ``instrument()``."""

    stage_spans: bool
    gradio_bridge: bool
    cuda_sync: bool
    max_text_chars: int  # 0 = no limit
    max_prompt_seconds: float
    hash_salt: bytes | None  # set with --hash-content: texts get a salted hash
    metrics: TtsMetrics | None = None  # --metrics: the request and stage instruments

    @classmethod
    def resolve(cls, kwargs: dict[str, Any], settings: Settings) -> Options:
        """Keyword arguments of ``instrument()`` over the option table (``runtime_settings``:
        the launcher's rendered ``COSYVOICE_TRACED_*``, ``OTEL_*`` fallbacks, defaults)."""

        def value(key: str) -> Any:
            return kwargs[key] if kwargs.get(key) is not None else settings.values[key]

        try:
            max_text, max_audio = parse_input_limits(value("input_limits"))
        except ValueError as exc:
            logger.warning("cosyvoice-otel: input limits %s; using the defaults", exc)
            max_text, max_audio = parse_input_limits(OPTIONS_BY_NAME["input_limits"].default)
        salt = None
        if value("hash_content"):
            # a secret, not a setting: never rendered, never printed
            secret = os.environ.get("COSYVOICE_TRACED_HASH_SALT", "")
            salt = secret.encode() if secret else os.urandom(32)
        recorder = None
        if value("metrics") not in ("none", False):
            try:
                recorder = tts_metrics.create(kwargs.get("meter_provider"),
                                              settings.service_version)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop tracing
                logger.warning("cosyvoice-otel: metrics are off (%s: %s)", type(exc).__name__, exc)
        return cls(bool(value("stage_spans")), bool(value("gradio_bridge")),
                   bool(value("cuda_sync")), max_text, max_audio, salt, recorder)


def _flush_spans_on_sigterm(timeout_ms: int = 3000) -> Callable[[int, Any], None] | None:
    """Let a SIGTERM'd app keep its last spans (the SDK flushes only in atexit, which the
    default SIGTERM action skips). Only when the app has no handler of its own: we flush for at
    most ``timeout_ms``, restore the default action and re-send the signal, so the exit status
    is still "terminated by SIGTERM". An app that sets its own handler later replaces ours."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        return None

    def flush_then_die(signum: int, frame: Any) -> None:
        # Flush, and wait for the exporters that deliver in the background (a pipelined
        # batch, librdkafka's queue): the SDK's flush only hands batches over to them. Twice:
        # a span that ends while the first batch is delivered (a Gradio event finishing in its
        # own thread) goes with the second. Bounded by timeout_ms in all.
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            from cosyvoice_otel.sdk.exporter import drain_background

            def close() -> None:
                for _ in range(2):
                    _quietly(lambda: provider.force_flush(timeout_ms))
                    _quietly(lambda: drain_background(timeout_ms / 1000))

            closing = threading.Thread(target=close, daemon=True)
            closing.start()
            closing.join(timeout_ms / 1000)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, flush_then_die)
    return flush_then_die


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001, S110 - dying anyway; never block the exit
        pass


ANCHOR_SLACK_NS = 50_000_000  # 50 ms: below it, the wall clock's wobble is ignored


class _ClockAnchor:
    """wall = monotonic + offset, the offset re-read from the clocks at each span start and
    changed only when the wall clock moved by more than ``ANCHOR_SLACK_NS``."""

    def __init__(self) -> None:
        self.offset = time.time_ns() - time.monotonic_ns()

    def wall(self, mono: int) -> int:
        now = time.time_ns() - mono
        if abs(now - self.offset) > ANCHOR_SLACK_NS:
            self.offset = now  # a clock step: follow it
        return mono + self.offset


def _subclasses(cls: type) -> list[type]:
    found, todo = [], list(cls.__subclasses__())
    while todo:
        sub = todo.pop()
        if sub not in found:
            found.append(sub)
            todo.extend(sub.__subclasses__())
    return found


def _is_our_wrapper(value: Any) -> bool:
    return isinstance(value, wrapt.FunctionWrapper) and getattr(
        value, "_self_cosyvoice_otel", False)


class CosyVoiceInstrumentor(BaseInstrumentor):
    """Stage spans for CosyVoice (the stage map) and the Gradio queue bridge."""

    def instrumentation_dependencies(self) -> Collection[str]:
        # Deliberately empty: CosyVoice is usually run from a checkout, not pip-installed, and
        # the loader silently skips an instrumentor whose dependencies are not installed.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        self._active = True
        self._patched: list[tuple[Any, str]] = []
        self._warned: set[str] = set()
        self._adopted: set[tuple[type, str]] = set()
        self._adopt_lock = threading.Lock()
        settings = runtime_settings()  # once per instrument(): a bad value warns once
        self.options = Options.resolve(kwargs, settings)
        tracer_provider = kwargs.get("tracer_provider")
        self._tracer = trace.get_tracer("cosyvoice_otel", __version__,
                                        tracer_provider=tracer_provider)
        rows: tuple[stage_map.Stage, ...] = ()
        if self.options.stage_spans:
            extra = list(kwargs.get("stages") or ())
            try:
                spec = settings.stage
                if spec and kwargs.get("stages") is None:
                    extra.extend(stage_map.parse_stage_specs(spec))
                path = kwargs.get("stage_map") or settings.stage_map
                if path:
                    extra.extend(stage_map.load_stage_file(path))
            except stage_map.StageMapError as exc:
                logger.warning("cosyvoice-otel: %s; using the built-in stage map only", exc)
            rows = stage_map.build("cosyvoice", extra)
        by_module: dict[str, list[stage_map.Stage]] = {}
        for row in rows:
            by_module.setdefault(row.module, []).append(row)
        self._rows = by_module
        for module_name in by_module:
            self._when_imported(module_name, self._patch_module)
        if self.options.gradio_bridge:
            self._when_imported("gradio.queueing", self._patch_gradio)
        if self.options.stage_spans:
            self._when_imported(stream_scope.TARGET[0], self._patch_streaming_response)
        self._sigterm = _flush_spans_on_sigterm()
        self._monotonic_span_durations()

    def _when_imported(self, module_name: str, patch: Any) -> None:
        def hook(module: Any) -> None:
            if self._active:
                patch(module)

        # wrapt calls the hook at once when the module is already imported
        wrapt.register_post_import_hook(hook, module_name)

    def _enabled(self) -> bool:
        return self._active

    # -- patching
    def _wrap(self, owner: Any, attr: str, wrapper: Any) -> None:
        wrapped = wrapt.FunctionWrapper(inspect.getattr_static(owner, attr), wrapper)
        wrapped._self_cosyvoice_otel = True
        setattr(owner, attr, wrapped)
        self._patched.append((owner, attr))

    def _resolve(self, module: Any, qualname: str) -> tuple[Any, str, Any] | None:
        owner: Any = module
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return None
        if not hasattr(owner, attr):
            return None
        return owner, attr, getattr(owner, attr)

    def _patch_module(self, module: Any) -> None:
        for row in self._rows.get(module.__name__, ()):
            try:
                self._patch_row(module, row)
            except Exception as exc:  # noqa: BLE001
                self._warn(row.target, f"could not be patched ({type(exc).__name__}: {exc})")

    def _patch_row(self, module: Any, row: stage_map.Stage) -> None:
        found = self._resolve(module, row.qualname)
        if found is None:
            if row.optional:
                logger.debug("cosyvoice-otel: optional target %s not found", row.target)
            else:
                self._warn(row.target, "not found; that stage will have no span")
            return
        owner, attr, _ = found
        self._patch_target(owner, attr, row)
        if inspect.isclass(owner):  # subclasses that override the method get their own span
            for sub in _subclasses(owner):
                if attr in sub.__dict__:
                    self._patch_target(sub, attr, row)

    def _patch_target(self, owner: Any, attr: str, row: stage_map.Stage) -> None:
        raw = inspect.getattr_static(owner, attr)  # walks the MRO without binding
        if _is_our_wrapper(raw):
            return  # idempotent; or inherited from a base class we already patched
        current = getattr(owner, attr)
        original = inspect.unwrap(current) if callable(current) else current
        if isinstance(raw, (staticmethod, classmethod)):
            self._warn(row.target, "is a static/class method; not supported")
            return
        params = list(inspect.signature(original).parameters)
        if inspect.isclass(owner) and params and params[0] in ("self", "cls"):
            params = params[1:]
        wrapper = StageWrapper(self._tracer, row, EXTRACTORS.get(row.extractor, EXTRACTORS["none"]),
                               self.options, {name: i for i, name in enumerate(params)},
                               inspect.isgeneratorfunction(original), self._enabled,
                               self._adopt if row.roles else None)
        self._wrap(owner, attr, wrapper)

    def _adopt(self, instance: Any, roles: tuple[stage_map.Role, ...]) -> None:
        """Trace the classes this instance's parts actually have (once per class and method)."""
        for role in roles:
            part = instance
            for name in role.path.split("."):
                part = getattr(part, name, None)
            if part is None:
                continue
            key = (type(part), role.method)
            if key in self._adopted:  # the common case: one set lookup per role and call
                continue
            with self._adopt_lock:
                if key not in self._adopted:
                    self._adopted.add(key)
                    self._adopt_part(type(part), role)

    def _adopt_part(self, cls: type, role: stage_map.Role) -> None:
        owner = next((klass for klass in cls.__mro__ if role.method in klass.__dict__), None)
        where = f"{cls.__module__}:{cls.__qualname__}.{role.method}"
        if owner is None or owner.__module__.split(".")[0] in ("builtins", "torch"):
            if role.required:
                self._warn(where, f"(role {role.path}.{role.method}) not found; "
                                  f"that stage will have no span")
            return
        try:
            self._patch_target(owner, role.method, role.stage_for(owner))
        except Exception as exc:  # noqa: BLE001
            self._warn(where, f"could not be patched ({type(exc).__name__}: {exc})")

    def _monotonic_span_durations(self) -> None:
        """Every SDK span (HTTP ones too) is timed on ONE clock: the monotonic clock, placed on
        the wall clock by an anchor (wall - monotonic). So a child can never start before or
        end after its parent, even when the wall clock is stepped or corrected between their
        starts (seen under VM load: a child 3.5 ms outside its parent). The anchor follows the
        wall clock when it moves by more than ``ANCHOR_SLACK_NS`` (an NTP step, a resumed VM),
        so timestamps stay comparable with other services'."""
        try:
            from opentelemetry.sdk.trace import Span
        except ImportError:
            return
        anchor = _ClockAnchor()

        def start(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            if args or kwargs.get("start_time") is not None:  # an explicit time is kept
                return wrapped(*args, **kwargs)
            mono = time.monotonic_ns()
            result = wrapped(start_time=anchor.wall(mono),
                             parent_context=kwargs.get("parent_context"))
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

        for attr, wrapper in (("start", start), ("end", end)):
            if not _is_our_wrapper(inspect.getattr_static(Span, attr)):
                self._wrap(Span, attr, wrapper)

    def _patch_gradio(self, module: Any) -> None:
        wrappers = gradio_bridge.make_wrappers(self._tracer, self._enabled)
        for qualname, wrapper in wrappers.items():
            found = self._resolve(module, qualname)
            if found is None:
                self._warn(f"gradio.queueing:{qualname}", "not found; the Gradio bridge is off")
                continue
            owner, attr, _ = found
            if not _is_our_wrapper(inspect.getattr_static(owner, attr)):
                self._wrap(owner, attr, wrapper)

    def _patch_streaming_response(self, module: Any) -> None:
        found = self._resolve(module, stream_scope.TARGET[1])
        if found is None:
            logger.debug("cosyvoice-otel: %s:%s not found", *stream_scope.TARGET)
            return
        owner, attr, _ = found
        if not _is_our_wrapper(inspect.getattr_static(owner, attr)):
            self._wrap(owner, attr, stream_scope.make_wrapper(self._enabled))

    def _warn(self, target: str, why: str) -> None:
        if target not in self._warned:
            self._warned.add(target)
            logger.warning("cosyvoice-otel: stage target %s %s", target, why)

    def _uninstrument(self, **kwargs: Any) -> None:
        """Undo all that ``_instrument`` did: post-import hooks go inert (wrapt cannot remove
        them), every patch is restored, our SIGTERM handler goes if it is still the one."""
        self._active = False
        self._adopted.clear()
        if self._sigterm is not None and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is self._sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._sigterm = None
        for owner, attr in reversed(self._patched):
            current = owner.__dict__.get(attr) if hasattr(owner, "__dict__") else None
            if _is_our_wrapper(current):
                setattr(owner, attr, current.__wrapped__)
        self._patched.clear()

    # -- introspection for tools and tests
    def patched_targets(self) -> list[str]:
        return [f"{getattr(o, '__module__', getattr(o, '__name__', '?'))}:"
                f"{getattr(o, '__qualname__', getattr(o, '__name__', '?'))}.{a}"
                for o, a in self._patched]

